"""The reloader on its own: every outcome is announced and the watch goes on after a failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from authz.errors import ConfigError
from gateway.reload import Reloader


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (ConfigError("no 'layers:'", file="routes.yaml"), "routes.yaml: no 'layers:'"),
        (ValueError("Port out of range 0-65535"), "ValueError: Port out of range 0-65535"),
    ],
    ids=["config error", "unexpected error"],
)
async def test_a_failed_apply_is_announced_and_the_watch_goes_on(
    tmp_path: Path, fault: Exception, error: str
):
    routes = tmp_path / "routes.yaml"
    routes.write_text("v: 1\n")
    outcomes: list[tuple[str, dict[str, object]]] = []
    applied = [0]

    def apply() -> int:
        if routes.read_text() == "v: 2\n":
            raise fault
        applied[0] += 1
        return applied[0]

    reloader = Reloader(
        routes, apply, on_result=lambda event, fields: outcomes.append((event, fields)),
        interval=0.05,
    )  # fmt: skip
    watch = asyncio.create_task(reloader.watch())
    try:
        for text in ("v: 2\n", "v: 3\n"):
            routes.write_text(text)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(outcomes) == ("v: 2\n", "v: 3\n").index(text) + 1:
                    break
        assert [event for event, _ in outcomes] == ["reload_rejected", "reloaded"]
        assert outcomes[0][1] == {"trigger": "file_change", "error": error}
        assert watch.done() is False
    finally:
        watch.cancel()
