"""Request-target normalization, done once and used for every decision about a path.

RFC 3986 normalization (percent-encoded unreserved characters decoded, hex upper-cased, dot
segments removed) plus merged slashes. Anything a backend could read differently from us is
*ambiguous*: encoded ``/``, ``\\``, ``?`` or ``#``, a literal ``\\``, double encoding
(``%25``), ``;`` path parameters, a fragment, dot segments, empty segments, or an escape no
UTF-8 encoder writes (overlong forms like ``%C0%AE``). An ambiguous path never matches a bypass
rule (security rule 1); an *invalid* one (NUL, control characters, a broken escape, not
origin-form) is refused outright.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["RequestPath", "normalize"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# Escapes that decode to a path delimiter or to another escape: a backend that decodes them
# would see a different path than the one we matched.
_AMBIGUOUS_ESCAPES = {
    "2F": "encoded_slash",
    "5C": "encoded_backslash",
    "25": "double_encoding",
    # A backend that decodes before it splits off the query or the fragment would route
    # /api/v1/scan%3F/health as /api/v1/scan.
    "3F": "encoded_question_mark",
    "23": "encoded_number_sign",
}
# Targets longer than this are normalized on every request instead of cached: the cache holds
# 4,096 targets, and 4,096 heads' worth of 64 KiB targets would pin about half a GiB.
_CACHED_TARGET_CHARS = 2048
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class RequestPath:
    """A request target split and normalized.

    ``path`` is the normalized path (always starts with ``/``); ``query`` is the raw query
    without ``?``. ``ambiguous`` names the first reason the raw path could be read two ways;
    ``invalid`` names why it must be refused. Both are None for a clean path.
    """

    path: str
    query: str
    ambiguous: str | None = None
    invalid: str | None = None


def normalize(target: str) -> RequestPath:
    """Normalize a raw request target (path plus optional query, as sent on the wire)."""
    # Cached: clients ask for the same few targets over and over.
    return _cached(target) if len(target) <= _CACHED_TARGET_CHARS else _normalize(target)


def _normalize(target: str) -> RequestPath:
    # Hot path: the common clean target is decided by a few C-level scans.
    ambiguous: str | None = None
    raw_path, _, query = target.partition("?")
    if "#" in raw_path or "#" in query:
        ambiguous = "fragment"
        raw_path = raw_path.partition("#")[0]
        query = query.partition("#")[0]
    if not raw_path.startswith("/"):
        return RequestPath(raw_path or "/", query, ambiguous, "not_origin_form")
    if _CONTROL.search(raw_path) or _CONTROL.search(query):
        return RequestPath("/", query, ambiguous, "control_character")

    if "%" in raw_path:
        decoded = _decode_unreserved(raw_path)
        if decoded is None:
            return RequestPath("/", query, ambiguous, "bad_escape")
        raw_path, escape_reason = decoded
        if escape_reason == "control_character":
            # Decoded by the backend, CR/LF and the rest would split its log lines or headers.
            return RequestPath("/", query, ambiguous, "control_character")
        ambiguous = ambiguous or escape_reason
    if "%00" in query:
        return RequestPath("/", query, ambiguous, "control_character")
    if "\\" in raw_path:
        ambiguous = ambiguous or "backslash"
    if ";" in raw_path:
        ambiguous = ambiguous or "path_parameter"

    segments = raw_path.split("/")
    output: list[str] = []
    for segment in segments[1:-1]:
        if segment in ("", "."):
            ambiguous = ambiguous or ("empty_segment" if segment == "" else "dot_segment")
        elif segment == "..":
            ambiguous = ambiguous or "dot_segment"
            if output:
                output.pop()
        else:
            output.append(segment)
    last = segments[-1] if len(segments) > 1 else ""
    if last in (".", ".."):
        ambiguous = ambiguous or "dot_segment"
        if last == ".." and output:
            output.pop()
        last = ""
    output.append(last)
    return RequestPath("/" + "/".join(output), query, ambiguous)


_cached = lru_cache(maxsize=4096)(_normalize)


def _decode_unreserved(path: str) -> tuple[str, str | None] | None:
    """Decode escapes of unreserved characters; None when an escape is malformed or NUL. The
    reason is ``control_character`` for an escaped control character (refused like a raw one)."""
    pieces = path.split("%")
    out = [pieces[0]]
    reason: str | None = None
    lead = -1  # the byte escaped just before, when nothing came between the two escapes
    for piece in pieces[1:]:
        hex_pair = piece[:2]
        if len(hex_pair) < 2 or not (hex_pair[0] in _HEX and hex_pair[1] in _HEX):
            return None
        upper = hex_pair.upper()
        byte = int(upper, 16)
        if byte == 0:
            return None
        if byte < 0x20 or byte == 0x7F:
            return path, "control_character"
        if _overlong(lead, byte):
            reason = reason or "overlong_utf8"
        lead = byte if len(piece) == 2 else -1
        char = chr(byte)
        if char in _UNRESERVED:
            out.append(char + piece[2:])
            continue
        reason = reason or _AMBIGUOUS_ESCAPES.get(upper)
        out.append("%" + upper + piece[2:])
    return "".join(out), reason


def _overlong(lead: int, byte: int) -> bool:
    """Whether ``byte`` (after ``lead``) makes an escape no UTF-8 encoder writes: an overlong
    form (``%C0%AE`` for ``.``), a surrogate or a code point past U+10FFFF. A lenient decoder
    upstream would read ``%C0%AE%C0%AE`` as ``..``."""
    if byte in (0xC0, 0xC1) or byte >= 0xF5:
        return True
    return (
        (lead == 0xE0 and 0x80 <= byte <= 0x9F)
        or (lead == 0xF0 and 0x80 <= byte <= 0x8F)
        or (lead == 0xED and 0xA0 <= byte <= 0xBF)
        or (lead == 0xF4 and 0x90 <= byte <= 0xBF)
    )
