"""The command examples in the docs run, and print what the docs say they print.

A fenced block right after ``<!-- test: run -->`` is run; the blocks of one page run in order as
one bash script (``set -euo pipefail``) from the repository's root, so variables and background
servers carry over, and every process the page started is stopped at the end. A fenced block
right after ``<!-- test: expect -->`` lists lines that the run block before it must print, in
order; ``...`` in a line matches anything. Examples talk to loopback addresses only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

# Pages whose examples must be runnable; any other page with markers runs too.
REQUIRED = ("docs/getting-started.md", "docs/operations.md")
PAGE_TIMEOUT = 120
_MARKER = re.compile(r"^<!-- test: (run|expect) -->$")
_FENCE = re.compile(r"^(```+)(\w*)")
_HOST = re.compile(r"\b(?:https?|amqp|redis)://([^/:\s\"']+)")
_SEPARATOR = "@@doc-example-block@@"


@dataclass
class Block:
    line: int
    code: str
    expected: list[str] = field(default_factory=list)


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        marker = _MARKER.match(lines[index])
        index += 1
        if not marker:
            continue
        fence = _FENCE.match(lines[index]) if index < len(lines) else None
        assert fence, f"{page}:{index + 1}: a fenced block must follow the marker"
        start = index + 1
        end = lines.index(fence.group(1), start)
        body = lines[start:end]
        index = end + 1
        if marker.group(1) == "run":
            assert fence.group(2) == "sh", f"{page}:{start}: runnable blocks are ```sh"
            found.append(Block(start, "\n".join(body)))
        else:
            assert found, f"{page}:{start}: an expect block needs a run block before it"
            found[-1].expected += [line.strip() for line in body if line.strip()]
    return found


def pages() -> list[Path]:
    marked = {p for p in (ROOT / "docs").glob("*.md") if "<!-- test: run -->" in p.read_text()}
    if "<!-- test: run -->" in (ROOT / "README.md").read_text():
        marked.add(ROOT / "README.md")
    return sorted(marked | {ROOT / page for page in REQUIRED})


def script(page_blocks: list[Block]) -> str:
    parts = [
        "set -euo pipefail",
        # Stop every background server the page started, whatever happened.
        "trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT",
    ]
    for block in page_blocks:
        parts += [f"echo '{_SEPARATOR}'", block.code]
    return "\n".join(parts) + "\n"


def matches(expected: str, line: str) -> bool:
    pattern = ".*".join(re.escape(part.strip()) for part in expected.split("..."))
    return re.search(pattern, line.strip()) is not None


def check_output(page: Path, page_blocks: list[Block], stdout: str) -> None:
    outputs = stdout.split(_SEPARATOR + "\n")[1:]
    assert len(outputs) == len(page_blocks)
    for block, output in zip(page_blocks, outputs, strict=True):
        lines = output.splitlines()
        position = 0
        for expected in block.expected:
            while position < len(lines) and not matches(expected, lines[position]):
                position += 1
            assert position < len(lines), (
                f"{page.name}:{block.line}: expected {expected!r} in order, got:\n{output}"
            )
            position += 1


# Tools the examples use besides the project's own; a newcomer's machine has them.
TOOLS = {"bash": "bash", "curl": "curl", "openssl": "openssl", "sed": "sed"}


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_doc_examples_run_and_print_what_the_page_shows(page, tmp_path):
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            pytest.fail(f"the examples need {tool}: apt-get install {package}")
    page_blocks = blocks(page)
    assert page_blocks, f"{page.name} has no runnable example"
    for block in page_blocks:
        # What the examples connect to (an issuer URL is only a name and is never fetched).
        for line in block.code.splitlines():
            if re.search(r"\bcurl\b|endpoints:|jwks_url:|store:|bus:|--admin", line):
                for host in _HOST.findall(line):
                    assert host in ("127.0.0.1", "localhost", "[::1]"), f"{page.name}: {line}"
    process = subprocess.Popen(
        ["bash", "-c", script(page_blocks)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{page.name}: examples still running after {PAGE_TIMEOUT} s:\n{stdout}")
    finally:
        # Anything a block left behind in the page's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{page.name}: exit {process.returncode}\n{stdout}\n{stderr}"
    check_output(page, page_blocks, stdout)


def test_expect_lines_match_with_ellipsis():
    assert matches("domain scan  layer=x ...", "domain scan  layer=x  owner=y")
    assert not matches("the scan report", "the scan")
