"""Hot reload: on SIGHUP or when a routes file changes, validate, build, swap atomically.

An invalid configuration is rejected with a log line and the serving one stays. Files are
polled (size and mtime) rather than watched with inotify: it works the same on every platform
and in containers with bind mounts, at the cost of one ``stat`` per file per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from authz.errors import ConfigError

__all__ = ["Reloader", "fingerprint"]

log = logging.getLogger("doma.gateway.reload")


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every routes file under ``path``."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if path.is_dir()
        else [path]
    )
    out = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        out.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(out)


class Reloader:
    """Calls ``apply`` (which loads, validates, builds and swaps) and reports the outcome."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[], int],
        *,
        on_result: Callable[[str, dict[str, object]], None],
        interval: float = 1.0,
    ):
        self._path = path
        self._apply = apply
        self._on_result = on_result
        self._interval = interval
        self._seen = fingerprint(path)

    def reload(self, trigger: str) -> bool:
        self._seen = fingerprint(self._path)
        try:
            generation = self._apply()
        except Exception as exc:
            # A ConfigError is the file's fault; anything else is ours, logged with its traceback
            # for a bug report. Either way: rejected, announced, the previous configuration
            # serves and the watch goes on.
            ours = not isinstance(exc, ConfigError)
            error = f"{type(exc).__name__}: {exc}" if ours else str(exc)
            log.error(
                "configuration could not be applied; the previous one keeps serving"
                if ours
                else "configuration rejected; the previous one keeps serving",
                exc_info=ours,
                extra={"event": "reload_rejected", "trigger": trigger, "error": error},
            )
            self._on_result("reload_rejected", {"trigger": trigger, "error": error})
            return False
        log.info(
            "configuration reloaded",
            extra={"event": "reloaded", "trigger": trigger, "generation": generation},
        )
        self._on_result("reloaded", {"trigger": trigger, "generation": generation})
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            current = await asyncio.to_thread(fingerprint, self._path)
            if current != self._seen:
                # A writer may still be mid-save; one more interval lets the file settle.
                await asyncio.sleep(min(self._interval, 0.2))
                self.reload("file_change")
