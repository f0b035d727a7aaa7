"""The generated gRPC code in the tree is exactly what ``make proto`` produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto_sources(tmp_path):
    # Run from elsewhere, as a fresh checkout's `make proto` would, into an empty directory.
    subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "nothing was generated"
    for relative in generated:
        committed = ROOT / relative
        assert committed.exists(), f"{relative} is generated but not in the tree: run make proto"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), (
            f"{relative} differs from its .proto: run make proto and commit the result"
        )
    in_tree = sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "authz" / "api").rglob("*_pb2*.py*")
        # Bytecode caches are written by whoever imports the module, not generated.
        if "__pycache__" not in p.parts
    )
    assert in_tree == generated, "generated files without a .proto source are in the tree"
