"""HPACK: the RFC 7541 examples, the decoding errors, the header list cap and the token cache."""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.hpack import (
    _CACHE_BUDGET,
    HeaderListTooLarge,
    HpackDecoder,
    HpackError,
    _huffman_codes,
    _huffman_decode,
    _integer,
    encode_headers,
)

CODES = _huffman_codes()
EOS = 256


def huffman(data: bytes, *, eos_after: int | None = None) -> bytes:
    """The Huffman code of ``data`` (RFC 7541 5.2), EOS inserted after ``eos_after`` octets."""
    symbols = list(data)
    if eos_after is not None:
        symbols.insert(eos_after, EOS)
    acc = bits = 0
    for symbol in symbols:
        code, length = CODES[symbol]
        acc, bits = acc << length | code, bits + length
    pad = -bits % 8
    return (acc << pad | (1 << pad) - 1).to_bytes((bits + pad) // 8, "big")


def integer(value: int, prefix: int, flags: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([flags | value])
    out, value = [flags | mask], value - mask
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def string(text: str, *, huffman_coded: bool = False) -> bytes:
    data = text.encode("latin-1")
    if huffman_coded:
        data = huffman(data)
        return integer(len(data), 7, 0x80) + data
    return integer(len(data), 7) + data


def literal(
    name: str | int, value: str, *, flags: int = 0x00, huffman_coded: bool = False
) -> bytes:
    """A literal field: 0x40 adds it to the table, 0x00 without indexing, 0x10 never indexed."""
    prefix = 6 if flags == 0x40 else 4
    head = integer(name, prefix, flags) if isinstance(name, int) else bytes([flags]) + string(name)
    return head + string(value, huffman_coded=huffman_coded)


def table(decoder: HpackDecoder) -> tuple[list[tuple[str, str]], int]:
    return list(decoder._table), decoder._size


def test_the_huffman_code_is_appendix_b():
    # One symbol of each code length, EOS, and the last symbol.
    expected = {
        0: (0x1FF8, 13), 1: (0x7FFFD8, 23), 2: (0xFFFFFE2, 28), 9: (0xFFFFEA, 24),
        10: (0x3FFFFFFC, 30), 32: (0x14, 6), 33: (0x3F8, 10), 35: (0xFFA, 12), 38: (0xF8, 8),
        39: (0x7FA, 11), 48: (0x0, 5), 58: (0x5C, 7), 60: (0x7FFC, 15), 92: (0x7FFF0, 19),
        94: (0x3FFC, 14), 97: (0x3, 5), 128: (0xFFFE6, 20), 129: (0x3FFFD2, 22),
        153: (0x1FFFDC, 21), 192: (0x3FFFFE0, 26), 199: (0x1FFFFEC, 25), 203: (0x7FFFFDE, 27),
        255: (0x3FFFFEE, 26), 256: (0x3FFFFFFF, 30),
    }  # fmt: skip
    assert {symbol: CODES[symbol] for symbol in expected} == expected
    assert sum(2.0**-bits for _, bits in CODES) == 1.0  # a complete prefix code


# RFC 7541 Appendix C.2: one block each, on a fresh decoder.
@pytest.mark.parametrize(
    ("block", "headers", "entries"),
    [
        (
            "400a637573746f6d2d6b65790d637573746f6d2d686561646572",
            [("custom-key", "custom-header")],
            [("custom-key", "custom-header")],
        ),
        ("040c2f73616d706c652f70617468", [(":path", "/sample/path")], []),
        ("100870617373776f726406736563726574", [("password", "secret")], []),
        ("82", [(":method", "GET")], []),
    ],
)
def test_appendix_c2_single_fields(block, headers, entries):
    decoder = HpackDecoder()
    assert decoder.decode(bytes.fromhex(block)) == headers
    assert table(decoder)[0] == entries


REQUESTS = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ],
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ],
]
REQUEST_TABLES = [
    ([(":authority", "www.example.com")], 57),
    ([("cache-control", "no-cache"), (":authority", "www.example.com")], 110),
    (
        [
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        164,
    ),
]
DATE_1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT")
LOCATION = ("location", "https://www.example.com")
COOKIE = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
RESPONSES = [
    [(":status", "302"), ("cache-control", "private"), DATE_1, LOCATION],
    [(":status", "307"), ("cache-control", "private"), DATE_1, LOCATION],
    [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        LOCATION,
        ("content-encoding", "gzip"),
        COOKIE,
    ],
]
RESPONSE_TABLES = [
    ([LOCATION, DATE_1, ("cache-control", "private"), (":status", "302")], 222),
    ([(":status", "307"), LOCATION, DATE_1, ("cache-control", "private")], 222),
    ([COOKIE, ("content-encoding", "gzip"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT")], 215),
]


@pytest.mark.parametrize(
    ("max_table_size", "blocks", "lists", "tables"),
    [
        pytest.param(
            4096,
            [
                "828684410f7777772e6578616d706c652e636f6d",
                "828684be58086e6f2d6361636865",
                "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
            ],
            REQUESTS,
            REQUEST_TABLES,
            id="C.3",
        ),
        pytest.param(
            4096,
            [
                "828684418cf1e3c2e5f23a6ba0ab90f4ff",
                "828684be5886a8eb10649cbf",
                "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
            ],
            REQUESTS,
            REQUEST_TABLES,
            id="C.4",
        ),
        pytest.param(
            256,
            [
                "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a32"
                "3120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
                "4803333037c1c0bf",
                "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a6970"
                "7738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d61"
                "67653d333630303b2076657273696f6e3d31",
            ],
            RESPONSES,
            RESPONSE_TABLES,
            id="C.5",
        ),
        pytest.param(
            256,
            [
                "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad"
                "171863c78f0b97c8e9ae82ae43d3",
                "4883640effc1c0bf",
                "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2"
                "e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
            ],
            RESPONSES,
            RESPONSE_TABLES,
            id="C.6",
        ),
    ],
)
def test_appendix_c_sequences_share_one_dynamic_table(max_table_size, blocks, lists, tables):
    decoder = HpackDecoder(max_table_size=max_table_size)
    for block, headers, expected_table in zip(blocks, lists, tables, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == headers
        assert table(decoder) == expected_table


def test_the_appendix_c4_strings_are_what_the_test_encoder_makes():
    """The test's Huffman encoder, which the property tests trust, agrees with the RFC."""
    assert huffman(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"
    assert huffman(b"custom-value").hex() == "25a849e95bb8e8b4bf"


@pytest.mark.parametrize(
    ("block", "max_table_size"),
    [
        pytest.param(b"\x80", 4096, id="index 0"),
        pytest.param(b"\xbe", 4096, id="dynamic index on an empty table"),
        pytest.param(literal("a", "b", flags=0x40) + b"\xbf", 4096, id="index past the table"),
        pytest.param(b"\x5f\xff\x0f" + string("v"), 4096, id="name index past the table"),
        pytest.param(integer(4097, 5, 0x20), 4096, id="size update over the setting"),
        pytest.param(integer(257, 5, 0x20), 256, id="size update over a small setting"),
        pytest.param(b"\x82\x20", 4096, id="size update after a field"),
        pytest.param(b"\x20\x3f\xe1\x1f\x20\x82", 4096, id="three size updates"),
        pytest.param(b"\xff", 4096, id="integer cut before its continuation"),
        pytest.param(b"\xff\x80", 4096, id="integer cut in its continuation"),
        pytest.param(b"\x3f" + b"\x80" * 5 + b"\x00", 4096, id="overlong integer"),
        pytest.param(b"\xff\xff\xff\xff\xff\x7f", 4096, id="integer over 2**32"),
        pytest.param(b"\x40\x0acustom", 4096, id="string cut short"),
        pytest.param(b"\x40", 4096, id="literal without its name"),
        pytest.param(b"\x04", 4096, id="literal without its value"),
        pytest.param(b"\x04\xff", 4096, id="string length cut short"),
        pytest.param(b"\x04\x7f\x80\x80\x80\x10" + b"x" * 100, 4096, id="string past the block"),
        pytest.param(
            b"\x04\x86" + huffman(b"ab", eos_after=1),
            4096,
            id="Huffman EOS inside",
        ),
        pytest.param(b"\x04\x84\xff\xff\xff\xff", 4096, id="Huffman EOS as padding"),
        pytest.param(b"\x04\x82" + huffman(b"a") + b"\xff", 4096, id="Huffman padding 11 bits"),
        pytest.param(b"\x04\x81\xff", 4096, id="Huffman padding 8 bits"),
        pytest.param(b"\x04\x81\x1e", 4096, id="Huffman padding with a zero bit"),
        pytest.param(b"\x04\x81\x00", 4096, id="Huffman padding of zeros"),
    ],
)
def test_a_broken_block_is_a_compression_error(block, max_table_size):
    with pytest.raises(HpackError):
        HpackDecoder(max_table_size=max_table_size).decode(block)


def test_integers_take_up_to_five_continuation_octets_and_2_to_the_32():
    assert _integer(b"\x3f\x80\x80\x80\x80\x00", 0, 0x1F) == (31, 6)
    assert _integer(integer(2**32, 5), 0, 0x1F) == (2**32, 6)
    with pytest.raises(HpackError):
        _integer(integer(2**32 + 1, 5), 0, 0x1F)


def test_size_updates_open_a_block_and_evict():
    decoder = HpackDecoder()
    decoder.decode(literal("a", "b" * 50, flags=0x40) + literal("c", "d", flags=0x40))
    assert table(decoder) == ([("c", "d"), ("a", "b" * 50)], 34 + 83)
    # Two updates may open a block: down to 40 (the older entry goes), then back up.
    assert decoder.decode(integer(40, 5, 0x20) + integer(4096, 5, 0x20) + b"\xbe") == [("c", "d")]
    assert table(decoder) == ([("c", "d")], 34)
    decoder.decode(integer(0, 5, 0x20))
    assert table(decoder) == ([], 0)


def test_an_entry_larger_than_the_table_empties_it_without_error():
    decoder = HpackDecoder(max_table_size=100)
    decoder.decode(literal("a", "b", flags=0x40))
    assert decoder.decode(literal("big", "x" * 100, flags=0x40)) == [("big", "x" * 100)]
    assert table(decoder) == ([], 0)


def test_names_and_values_are_latin1_and_undecoded_case():
    decoder = HpackDecoder()
    value = "caf\xe9 \xff\x00"
    block = literal("X-Upper", value) + literal("x-h", value, huffman_coded=True)
    assert decoder.decode(block) == [("X-Upper", value), ("x-h", value)]


def test_an_entry_size_counts_latin1_octets():
    decoder = HpackDecoder()
    decoder.decode(literal("\xe9", "\xff\xfe", flags=0x40))
    assert table(decoder)[1] == 1 + 2 + 32


def test_a_list_over_the_cap_is_decoded_whole_and_the_next_block_is_in_sync():
    decoder = HpackDecoder(max_header_list_size=150)
    # 42 + 137 octets: over after the second field; the third still enters the table.
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(
            b"\x82" + literal("x-big", "v" * 100, flags=0x40) + literal("c", "d", flags=0x40)
        )
    assert decoder.decode(b"\xbf") == [("x-big", "v" * 100)]
    assert decoder.decode(b"\xbe") == [("c", "d")]


def test_the_cap_counts_32_octets_a_field():
    block = literal("ab", "cd")  # 2 + 2 + 32 = 36
    assert HpackDecoder(max_header_list_size=36).decode(block) == [("ab", "cd")]
    with pytest.raises(HeaderListTooLarge):
        HpackDecoder(max_header_list_size=35).decode(block)


def test_an_indexed_bomb_is_refused_in_bounded_time_and_memory():
    """One 4,000-octet entry referenced 10,000 times would be a 40 MB header list."""
    block = literal("x-bomb", "a" * 4000, flags=0x40) + b"\xbe" * 10_000
    decoder = HpackDecoder()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(HeaderListTooLarge):
            decoder.decode(block)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Listed fields would share one tuple, so even listing all 10,000 takes only 90 KB.
    assert peak < 50_000
    assert elapsed < 1.0
    assert decoder.decode(b"\xbe") == [("x-bomb", "a" * 4000)]


def test_encoded_headers_decode_to_the_same_list_and_leave_the_table_alone():
    headers = [
        (":status", "200"),
        (":status", "403"),
        ("content-type", "application/json"),
        ("www-authenticate", 'Bearer error="invalid_token"'),
        ("x-doma-reason", "caf\xe9 \xff" + "x" * 200),  # a length past the 7-bit prefix
        ("x-" + "n" * 130, ""),
    ]
    block = encode_headers(headers)
    decoder = HpackDecoder()
    assert decoder.decode(block) == headers
    assert table(decoder) == ([], 0)
    assert block.startswith(b"\x88\x08\x03403\x0f\x10\x10application/json")


def test_a_repeated_never_indexed_token_is_decoded_once():
    token = "Bearer " + "eyJ" * 100
    block = b"\x82" + literal(23, token, flags=0x10, huffman_coded=True)
    decoder = HpackDecoder()
    first = decoder.decode(block)
    assert list(decoder._cache.values()) == [token]
    assert decoder.decode(block) == first == [(":method", "GET"), ("authorization", token)]
    assert len(decoder._cache) == 1


def test_a_block_may_come_in_a_bytearray_or_a_memoryview():
    block = literal(23, "Bearer " + "eyJ" * 100, flags=0x10, huffman_coded=True)
    expected = HpackDecoder().decode(block)
    decoder = HpackDecoder()
    assert decoder.decode(bytearray(block)) == decoder.decode(memoryview(block)) == expected


def test_only_long_values_sent_without_indexing_are_cached():
    value = "v" * 200
    decoder = HpackDecoder()
    decoder.decode(literal("x-indexed", value, flags=0x40, huffman_coded=True))
    decoder.decode(literal("x-short", "short", huffman_coded=True))
    decoder.decode(literal("x-raw", value))
    assert decoder._cache == {}


def test_a_broken_token_is_refused_every_time():
    block = literal(23, "Bearer " + "x" * 100, flags=0x10, huffman_coded=True)[:-1] + b"\x00"
    decoder = HpackDecoder()
    for _ in range(2):
        with pytest.raises(HpackError):
            decoder.decode(block)
    assert decoder._cache == {}


def test_the_cache_keeps_the_recently_used_within_its_budget():
    rng = random.Random(7)
    tokens = ["".join(rng.choices("abcdefghijklmnop", k=1000)) for _ in range(100)]
    decoder = HpackDecoder()
    hot = literal(23, tokens[0], flags=0x10, huffman_coded=True)
    for token in tokens[1:]:
        assert decoder.decode(hot) == [("authorization", tokens[0])]
        assert decoder.decode(literal(23, token, flags=0x10, huffman_coded=True))[0][1] == token
        assert decoder._cached <= _CACHE_BUDGET
    assert tokens[0] in decoder._cache.values()
    assert decoder._cached == sum(map(len, decoder._cache))


def test_the_block_cache_holds_little_however_small_the_blocks():
    """Blocks of three indexed fields, each distinct: the cache charges each for its list and
    its entry, not just its three octets."""
    decoder = HpackDecoder()
    triples = itertools.islice(itertools.product(range(1, 62), repeat=3), 20_000)
    blocks = [bytes(0x80 | index for index in triple) for triple in triples]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for block in blocks:
            decoder.decode(block)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 128 * 1024


def reference_huffman_decode(data: bytes) -> str | None:
    """Bit by bit, straight from RFC 7541 5.2; None where the string is invalid."""
    symbols = {code: symbol for symbol, code in enumerate(CODES)}
    out, acc, bits = [], 0, 0
    for byte in data:
        for shift in range(7, -1, -1):
            acc, bits = acc << 1 | byte >> shift & 1, bits + 1
            symbol = symbols.get((acc, bits))
            if symbol == EOS:
                return None
            if symbol is not None:
                out.append(chr(symbol))
                acc = bits = 0
    if bits > 7 or acc != (1 << bits) - 1:
        return None
    return "".join(out)


@given(st.binary(max_size=300))
def test_huffman_decodes_what_was_encoded(data):
    assert _huffman_decode(huffman(data)) == data.decode("latin-1")


@given(st.binary(max_size=40) | st.binary(max_size=12).map(lambda d: huffman(d) + d[:2]))
def test_huffman_accepts_and_refuses_exactly_like_a_bitwise_decoder(data):
    expected = reference_huffman_decode(data)
    if expected is None:
        with pytest.raises(HpackError):
            _huffman_decode(data)
    else:
        assert _huffman_decode(data) == expected


latin1 = st.characters(max_codepoint=255)
field = st.tuples(st.text(latin1, max_size=20), st.text(latin1, max_size=80))


@given(st.lists(st.tuples(field, st.sampled_from([0x00, 0x10, 0x40]), st.booleans()), max_size=30))
def test_literals_of_every_kind_decode_in_order(fields):
    """A long sequence, so entries are added, referenced by name index and evicted."""
    decoder = HpackDecoder(max_table_size=256, max_header_list_size=1 << 20)
    mirror: list[tuple[str, str]] = []  # the table as the encoder sees it
    for (name, value), flags, coded in fields:
        if (name, value) in mirror:
            block, flags = integer(62 + mirror.index((name, value)), 7, 0x80), 0x80
        elif mirror and mirror[0][0] == name:
            block = literal(62, value, flags=flags, huffman_coded=coded)
        else:
            block = literal(name, value, flags=flags, huffman_coded=coded)
        assert decoder.decode(block) == [(name, value)]
        if flags == 0x40:
            mirror.insert(0, (name, value))
            while sum(len(n) + len(v) + 32 for n, v in mirror) > 256:
                mirror.pop()
    assert table(decoder)[0] == mirror
