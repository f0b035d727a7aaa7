"""Sampling a server under load with py-spy and summarising where its time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;frame count``); the summary
lists the functions with the most samples on top of the stack (self) and anywhere in it
(inclusive), as shares of all samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["pyspy_binary", "record", "summarise"]

_LINE = re.compile(r":\d+\)$")


def pyspy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, *, native: bool) -> subprocess.Popen[str]:
    """Start sampling ``pid`` for ``seconds`` into ``output``; the caller waits on the result."""
    binary = pyspy_binary()
    if binary is None:
        raise FileNotFoundError("py-spy not found: pip install py-spy (the dev extra has it)")
    argv = [
        binary, "record", "--pid", str(pid), "--duration", str(max(int(seconds), 1)),
        "--rate", "200", "--format", "raw", "--output", str(output),
    ]  # fmt: skip
    if native:
        argv.append("--native")
    else:
        argv.append("--nonblocking")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _frame(raw: str) -> str:
    """``function (path:line)`` without the line number, so one function is one row."""
    return _LINE.sub(")", raw.strip())


def summarise(collapsed: Path, top: int = 15) -> dict[str, object]:
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / total, 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self": shares(self_samples), "inclusive": shares(inclusive)}


def format_summary(name: str, summary: dict[str, object]) -> str:
    lines = [f"profile of {name}: {summary['samples']} samples"]
    for title in ("self", "inclusive"):
        lines.append(f"  top by {title} time:")
        rows = summary[title]
        assert isinstance(rows, list)
        lines.extend(f"    {share:5.1f}%  {frame}" for frame, share in rows)
    return "\n".join(lines)
