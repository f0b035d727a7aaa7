"""Back-pressure for the check listeners: a client that does not read is not read either."""

from __future__ import annotations

import asyncio

__all__ = ["BackPressured"]


class BackPressured(asyncio.Protocol):
    """A protocol that stops reading while its write buffer is full.

    A client that sends checks (or PINGs, or SETTINGS) and never reads the answers would have
    them pile up in our write buffer: its requests wait in the kernel instead, until the
    buffer drains.
    """

    _transport: asyncio.Transport | None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
