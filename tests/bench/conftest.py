"""The benchmark harnesses need wrk, nginx and valgrind; `make test` installs them (its
bench-tools step)."""

import os
import shutil

import pytest


@pytest.fixture(autouse=True)
def load_tools() -> None:
    missing = [
        tool
        for tool, present in (
            ("wrk", shutil.which("wrk") is not None),
            ("nginx", shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK)),
            ("valgrind", shutil.which("valgrind") is not None),
        )
        if not present
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `make bench-tools` "
            "(apt-get install wrk nginx-light valgrind)",
            pytrace=False,
        )
