"""Fault tests: real processes broken on purpose, with the numbers they measured.

Every test is marked ``faults`` (``make test-faults`` selects them); the long soak is marked
``soak`` as well and runs for ``DOMA_SOAK_SECONDS`` (60 in ``make test``, 600 in
``make test-faults``). Measured numbers are printed (``pytest -s``) and collected in
``faults.json`` under pytest's base temporary directory (``DOMA_FAULTS_REPORT`` to choose).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The gateway's real-process fixtures, shared with tests/gateway.
from tests.gateway.conftest import start_gateway, upstream, upstream_b

__all__ = ["Record", "start_gateway", "upstream", "upstream_b"]

Record = Callable[..., None]

_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DOMA_FAULTS_REPORT")
    return Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "faults.json"


@pytest.fixture
def record(request: pytest.FixtureRequest, report_path: Path) -> Iterator[Record]:
    """``record(key=value, ...)``: print the measured numbers and keep them in faults.json."""
    name = f"{request.node.path.name}::{request.node.name}"

    def _record(**numbers: object) -> None:
        print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
        with _LOCK:
            data = json.loads(report_path.read_text()) if report_path.exists() else {}
            data.setdefault(name, {}).update(numbers)
            report_path.write_text(json.dumps(data, indent=2, sort_keys=True))

    yield _record
