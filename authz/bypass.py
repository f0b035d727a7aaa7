"""Bypass rules: request paths that need no token.

A rule is a path glob where ``*`` matches exactly one non-empty segment and ``**`` any number of
segments (zero included). Matching is case-sensitive, ignores the query string, and only ever sees
a normalized, unambiguous path (see :mod:`authz.paths`).
"""

from __future__ import annotations

import re

__all__ = ["BypassRules", "compile_glob", "validate_glob"]

_SEGMENT_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,=:@%]*\Z")


def validate_glob(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid bypass glob, or None when it is."""
    if not pattern.startswith("/"):
        return "must start with '/'"
    if "?" in pattern or "#" in pattern:
        return "must not contain a query or fragment (matching ignores the query string)"
    for segment in pattern.split("/")[1:]:
        if segment in ("*", "**"):
            continue
        if "*" in segment:
            return f"segment {segment!r}: '*' must stand alone ('*' is one segment, '**' many)"
        if segment in (".", ".."):
            return f"segment {segment!r}: dot segments are not allowed"
        if not _SEGMENT_CHARS.match(segment):
            return f"segment {segment!r} has characters that cannot appear in a normalized path"
    return None


def compile_glob(pattern: str) -> str:
    """The regular expression (without anchors) that ``pattern`` stands for."""
    parts = []
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            parts.append(r"(?:/[^/]+)*")
        elif segment == "*":
            parts.append(r"/[^/]+")
        else:
            parts.append("/" + re.escape(segment))
    return "".join(parts) or "/"


class BypassRules:
    """All bypass globs compiled into one anchored regular expression."""

    __slots__ = ("_regex", "patterns")

    def __init__(self, patterns: tuple[str, ...]):
        for pattern in patterns:
            problem = validate_glob(pattern)
            if problem:
                raise ValueError(f"bypass pattern {pattern!r}: {problem}")
        self.patterns = patterns
        alternatives = "|".join(f"(?:{compile_glob(p)})" for p in patterns)
        self._regex = re.compile(alternatives) if patterns else None

    def matches(self, normalized_path: str) -> bool:
        return self._regex is not None and self._regex.fullmatch(normalized_path) is not None
