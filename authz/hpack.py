"""HPACK (RFC 7541) for the HTTP/2 check listener: a decoder, and a tiny encoder for answers.

The ``hpack`` package would do, but it is one more dependency on the check path, and its
pure-Python Huffman decoder steps a nibble at a time with flag tests between steps. Here a table
built once at import (18 ms, 2.5 MB) takes a whole input byte per step (tree node x byte -> the
symbols it completes, the next node): a 700-character token (558 octets coded) takes 28 us.

Envoy sends ``authorization`` never indexed (RFC 7541 7.1.3: a credential stays out of the
dynamic table), so the same Huffman-coded bytes arrive as a literal on every request of every
client that holds that token. Each decoder keeps the strings it decoded from such literals, so a
repeated token costs a dict lookup. See :class:`HpackDecoder` for why the cache is per decoder.

Names and values are ``str`` decoded as latin-1 (octet n is code point n). Whether names are
lower case is the frame layer's business (a stream error, RFC 7540 8.1.2), not this module's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["MAX_CACHED_BLOCK", "HeaderListTooLarge", "HpackDecoder", "HpackError", "encode_headers"]


class HpackError(Exception):
    """The block cannot be decoded: a COMPRESSION_ERROR (RFC 7540 4.3); the connection must end."""


class HeaderListTooLarge(Exception):
    """The decoded list passed max_header_list_size; the block WAS decoded whole, so the dynamic
    table stays in sync and the connection may go on (the stream gets a 431)."""


# Appendix A, indices 1 to 61: seven with values, then names alone from "accept-language" on.
_NAMES_ONLY = """accept-language accept-ranges accept access-control-allow-origin age allow
    authorization cache-control content-disposition content-encoding content-language
    content-length content-location content-range content-type cookie date etag expect expires
    from host if-match if-modified-since if-none-match if-range if-unmodified-since last-modified
    link location max-forwards proxy-authenticate proxy-authorization range referer refresh
    retry-after server set-cookie strict-transport-security transfer-encoding user-agent vary via
    www-authenticate"""
_STATIC: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    *((":status", code) for code in ("200", "204", "206", "304", "400", "404", "500")),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    *((name, "") for name in _NAMES_ONLY.split()),
)
# The first index of each name (reversed, so the lowest index is written last and stays).
_STATIC_NAMES = {name: index for index, (name, _) in reversed(list(enumerate(_STATIC, 1)))}
_STATUS_INDEX = {
    value: index for index, (name, value) in enumerate(_STATIC, 1) if name == ":status"
}

# Appendix B, as code lengths in bits for symbols 0 to 255 (32 a line) then EOS. The code is
# canonical (codes of one length are consecutive, in symbol order), so lengths define it.
_CODE_BITS = bytes.fromhex(
    """
    0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c
    060a0a0c0d06080b0a0a080b080606060505050606060606060607080f060c0a
    0d06070707070707070707070707070707070707070707070807080d130d0e06
    0f05060506050606060507070606060506070605050607070707070f0b0e0d1c
    1416141416161617161717171717181718181617181717171715161716171718
    1615141616171715171616181516171715151615171617171416161617161617
    1a1a1413161716191a1a1a1b1b1a181913151a1b1b1a1b1815151a1a1c1b1b1b
    14181415161515171616191918181a171a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a
    1e
    """
)
_EOS = 256


def _huffman_codes() -> list[tuple[int, int]]:
    """(code, bits) of each symbol, EOS last: Appendix B rebuilt from the lengths."""
    codes = [(0, 0)] * 257
    code = previous = 0
    for symbol in sorted(range(257), key=lambda s: (_CODE_BITS[s], s)):
        bits = _CODE_BITS[symbol]
        code <<= bits - previous
        codes[symbol], code, previous = (code, bits), code + 1, bits
    return codes


def _huffman_tables() -> tuple[list[int], list[str], frozenset[int]]:
    """The byte-at-a-time decoder: ``next[s + byte]`` and ``pieces[s + byte]`` give the state
    after ``byte`` and the symbols it completed, where a state ``s`` is a tree node times 256.

    A dead state swallows everything after EOS. The states where a string may end are the root
    and the nodes up to 7 one bits below it (RFC 7541 5.2: padding is a prefix of EOS, < 8 bits).
    """
    tree = [[0, 0]]  # internal nodes; a child >= 0 is a node, ~symbol a leaf
    for symbol, (code, bits) in enumerate(_huffman_codes()):
        node = 0
        for shift in range(bits - 1, 0, -1):
            bit = code >> shift & 1
            if not tree[node][bit]:
                tree[node][bit] = len(tree)
                tree.append([0, 0])
            node = tree[node][bit]
        tree[node][code & 1] = ~symbol
    dead = len(tree)
    tree.append([dead, dead])
    state = [node << 8 for node in range(dead + 1)]
    # First by nibbles (a nibble completes at most one symbol: the shortest code has 5 bits),
    # then each byte as two nibbles: 16 times fewer steps than walking 8 bits per entry.
    nibble: list[list[tuple[str, int]]] = []
    for start in range(dead + 1):
        row = []
        for value in range(16):
            node, piece = start, ""
            for shift in (3, 2, 1, 0):
                child = tree[node][value >> shift & 1]
                if child >= 0:
                    node = child
                elif child == ~_EOS:
                    node = dead
                else:
                    node, piece = 0, chr(~child)
            row.append((piece, state[node]))
        nibble.append(row)
    next_: list[int] = []
    pieces: list[str] = []
    shared: dict[str, str] = {}  # 17,000 distinct two-symbol pieces, each stored once
    for start in range(dead + 1):
        for high_piece, high_state in nibble[start]:
            for low_piece, low_state in nibble[high_state >> 8]:
                piece = high_piece + low_piece
                pieces.append(shared.setdefault(piece, piece))
                next_.append(low_state)
    ends, node = set(), 0
    for _ in range(8):
        ends.add(state[node])
        node = tree[node][1]
    # A last entry whose next state is the root, for the decode loop to start from.
    next_.append(0)
    pieces.append("")
    return next_, pieces, frozenset(ends)


_NEXT, _PIECES, _ENDS = _huffman_tables()
_START = len(_NEXT) - 1


def _huffman_decode(data: bytes) -> str:
    i = _START
    # One subscript pair per input byte; the walrus carries the state through the comprehension.
    pieces = [_PIECES[(i := _NEXT[i] + byte)] for byte in data]
    if _NEXT[i] not in _ENDS:
        raise HpackError("invalid Huffman string: EOS, or padding that is not up to 7 one bits")
    return "".join(pieces)


_MAX_INTEGER = 2**32
_MAX_CONTINUATION = 5  # 7 bits each: enough for 2**32 after any prefix


def _integer(block: bytes, pos: int, mask: int) -> tuple[int, int]:
    """The integer at ``block[pos]`` whose prefix is the bits of ``mask`` (RFC 7541 5.1), and
    the position after it."""
    if pos >= len(block):
        raise HpackError("truncated block: an integer is missing")
    value = block[pos] & mask
    if value < mask:
        return value, pos + 1
    shift = 0
    while True:
        pos += 1
        if pos >= len(block):
            raise HpackError("truncated block: an integer is cut short")
        byte = block[pos]
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift == 7 * _MAX_CONTINUATION:
            raise HpackError("integer too long")
    if value > _MAX_INTEGER:
        raise HpackError("integer too large")
    return value, pos + 1


# The token cache: encoded bytes -> decoded value, per decoder (see HpackDecoder).
_CACHE_BUDGET = 32 * 1024  # encoded octets kept per decoder: ~60 JWTs of 500 octets
_CACHE_MIN = 64  # shorter strings decode in a few us: not worth an entry
_CACHE_MAX = 4096
# Whole blocks kept per decoder: a few dozen checks' worth. Each is charged its octets and
# _FIELD_COST per field of its list (a tuple, a list slot, a short string), so that blocks of
# many tiny fields cannot hold many times the budget: a 3-octet block lists three fields.
_BLOCK_CACHE_BUDGET = 64 * 1024
_FIELD_COST = 128
MAX_CACHED_BLOCK = 4096  # a longer block is decoded afresh every time


class HpackDecoder:
    """One connection's decoding context: the dynamic table, and the cache of literal values.

    The cache is per decoder rather than per process: its memory is bounded per connection and
    goes with it, a hostile connection cannot evict the entries of Envoy's connections, and no
    lock is needed. Envoy sends every check of a worker thread over one connection, so that
    connection's cache sees every token the worker sees. Only values sent without indexing are
    cached: a value the encoder indexes comes back as an index next time, and caching such values
    (a fresh x-request-id per request) would only push the tokens out.
    """

    __slots__ = (
        "_block_bytes",
        "_blocks",
        "_cache",
        "_cached",
        "_generation",
        "_limit",
        "_list_size",
        "_size",
        "_table",
        "max_table_size",
    )

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536):
        self.max_table_size = max_table_size
        self._list_size = max_header_list_size
        self._limit = max_table_size  # the encoder may lower it with a size update
        self._table: deque[tuple[str, str]] = deque()  # newest first: index 62 is [0]
        self._size = 0
        self._cache: dict[bytes, str] = {}  # least recently used first
        self._cached = 0  # encoded octets in the cache
        # Whole blocks that left the table as it was: while it stays so (the same generation),
        # the same bytes decode to the same list. Envoy sends a client's repeated check as the
        # same bytes (indexed fields, :path and the token as literals that index nothing).
        self._generation = 0  # moves on with every change to the table
        # block -> (generation, its list, what it is charged); oldest first
        self._blocks: dict[bytes, tuple[int, list[tuple[str, str]], int]] = {}
        self._block_bytes = 0

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header list of one complete block (HEADERS plus its CONTINUATIONs).

        A block seen before may get the very list it got then: the caller must not change it.
        """
        if type(block) is not bytes:  # a bytearray or memoryview from the frame buffer
            block = bytes(block)
        seen = self._blocks.get(block)
        if seen is not None and seen[0] == self._generation:
            return seen[1]
        generation = self._generation
        headers = self._decode(block)
        if self._generation == generation and len(block) <= MAX_CACHED_BLOCK:
            self._remember(block, headers)
        return headers

    def _remember(self, block: bytes, headers: list[tuple[str, str]]) -> None:
        stale = self._blocks.pop(block, None)
        if stale is not None:
            self._block_bytes -= stale[2]
        cost = len(block) + _FIELD_COST * (len(headers) + 1)
        self._blocks[block] = (self._generation, headers, cost)
        self._block_bytes += cost
        while self._block_bytes > _BLOCK_CACHE_BUDGET:
            oldest = next(iter(self._blocks))
            self._block_bytes -= self._blocks.pop(oldest)[2]

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        room = self._list_size
        end = len(block)
        pos = 0
        # Size updates may only open a block, and two say all there is to say: the smallest
        # size since the last block, then the final one (RFC 7541 4.2). More is a block padded
        # out with the costliest octets to decode.
        updates = 0
        while pos < end and block[pos] & 0xE0 == 0x20:
            updates += 1
            if updates > 2:
                raise HpackError("more than two dynamic table size updates")
            size, pos = _integer(block, pos, 0x1F)
            self._resize(size)
        while pos < end:
            byte = block[pos]
            if byte & 0x80:
                if byte != 0xFF:
                    field, pos = self._field(byte & 0x7F), pos + 1
                else:
                    index, pos = _integer(block, pos, 0x7F)
                    field = self._field(index)
            elif byte & 0x40:
                field, pos = self._literal(block, pos, 0x3F, False)
                self._insert(field)
            elif byte & 0x20:
                raise HpackError("a dynamic table size update after a header field")
            else:  # without indexing (0000) or never indexed (0001): 4-bit prefix either way
                field, pos = self._literal(block, pos, 0x0F, True)
            # Past the cap, the rest is still decoded (the table must follow the encoder's)
            # but no longer listed: work and memory stay bounded by the block's size.
            room -= len(field[0]) + len(field[1]) + 32
            if room >= 0:
                headers.append(field)
        if room < 0:
            raise HeaderListTooLarge(f"header list over {self._list_size} octets")
        return headers

    def _field(self, index: int) -> tuple[str, str]:
        if index <= 61:
            if index:
                return _STATIC[index - 1]
            raise HpackError("index 0")
        if index - 62 < len(self._table):
            return self._table[index - 62]
        raise HpackError(f"index {index} is past the table")

    def _literal(
        self, block: bytes, pos: int, mask: int, cache: bool
    ) -> tuple[tuple[str, str], int]:
        index = block[pos] & mask  # the caller saw block[pos]
        if index == mask:
            index, pos = _integer(block, pos, mask)
        else:
            pos += 1
        if index:
            name = self._field(index)[0]
        else:
            name, pos = self._string(block, pos, False)
        value, pos = self._string(block, pos, cache)
        return (name, value), pos

    def _string(self, block: bytes, pos: int, cache: bool) -> tuple[str, int]:
        if pos >= len(block):
            raise HpackError("truncated block: a string is missing")
        huffman = block[pos] & 0x80
        length = block[pos] & 0x7F
        if length == 0x7F:
            length, pos = _integer(block, pos, 0x7F)
        else:
            pos += 1
        end = pos + length
        if end > len(block):
            raise HpackError("truncated block: a string is cut short")
        data = block[pos:end]
        if not huffman:
            return data.decode("latin-1"), end
        if not cache or not _CACHE_MIN <= length <= _CACHE_MAX:
            return _huffman_decode(data), end
        value = self._cache.pop(data, None)
        if value is None:
            value = _huffman_decode(data)
            self._cached += length
            while self._cached > _CACHE_BUDGET:
                oldest = next(iter(self._cache))
                self._cached -= len(oldest)
                del self._cache[oldest]
        self._cache[data] = value  # (re)inserted last: the most recently used
        return value, end

    def _insert(self, field: tuple[str, str]) -> None:
        self._generation += 1
        size = len(field[0]) + len(field[1]) + 32
        if size > self._limit:  # not an error: the table just empties (RFC 7541 4.4)
            self._table.clear()
            self._size = 0
            return
        self._evict(self._limit - size)
        self._table.appendleft(field)
        self._size += size

    def _resize(self, size: int) -> None:
        if size > self.max_table_size:
            raise HpackError(f"table size update to {size}, over the {self.max_table_size} set")
        self._generation += 1
        self._limit = size
        self._evict(size)

    def _evict(self, size: int) -> None:
        while self._size > size:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32


def _encode_integer(value: int, prefix: int, flags: int) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(text: str) -> bytes:
    data = text.encode("latin-1")
    return _encode_integer(len(data), 7, 0) + data


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """Literal Header Field without Indexing (never touches the peer's dynamic table), names by
    static-table index where one matches, no Huffman. ':status' values 200/204/206/304/400/404/500
    use the static indexed form."""
    out = bytearray()
    for name, value in headers:
        if name == ":status" and value in _STATUS_INDEX:
            out += _encode_integer(_STATUS_INDEX[value], 7, 0x80)
        elif name in _STATIC_NAMES:
            out += _encode_integer(_STATIC_NAMES[name], 4, 0) + _encode_string(value)
        else:
            out += b"\x00" + _encode_string(name) + _encode_string(value)
    return bytes(out)
