"""The verified claims as extensions see them: a read-only deep copy, built once per claims object.

The claims an auth policy puts in the scope are the very mapping the verified-token cache keeps
(and the scopes policy remembers its answer per that object): an extension that could write to
it would change what every later request with the same token is granted. So extensions get a
copy in which every mapping is a ``MappingProxyType`` and every list a tuple, nested values
included. The copy is remembered per claims object, so a cached token pays for it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["ReadOnlyClaims", "read_only"]

# Bounds what the memo keeps alive; cleared whole when full, as the scopes policy's memo.
_MEMO_SIZE = 8192


def read_only(value: Any) -> Any:
    """``value`` with every mapping made a read-only copy and every list a tuple, recursively."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: read_only(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(read_only(item) for item in value)
    return value


class ReadOnlyClaims:
    """Read-only copies of claims mappings, remembered by identity."""

    def __init__(self) -> None:
        # id -> (the claims, their copy): holding the claims keeps their id from being reused.
        self._memo: dict[int, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}

    def view(self, claims: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if claims is None:
            return None
        found = self._memo.get(id(claims))
        if found is not None and found[0] is claims:
            return found[1]
        copy: Mapping[str, Any] = read_only(claims)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[id(claims)] = (claims, copy)
        return copy
