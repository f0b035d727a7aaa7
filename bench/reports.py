"""Where the benchmarks write their JSON reports, and writing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "write"]

# Not committed (.gitignore): each run writes its own.
RESULTS = Path(__file__).resolve().parent / "results"


def write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
