"""Generate the Python modules of every ``.proto`` under proto/ (what ``make proto`` runs).

Usage: ``python proto/generate.py [--out DIR]``. The default output is the repository root, so
``proto/authz/api/v1/revocation.proto`` becomes ``authz/api/v1/revocation_pb2{,_grpc}.py`` and
``revocation_pb2.pyi``. The test suite generates into a temporary directory and compares, so
generated code that drifts from its ``.proto`` (or from the pinned grpcio-tools) fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def sources() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generated_files(out: Path) -> list[Path]:
    """The files :func:`generate` writes for every source, under ``out``."""
    files = []
    for source in sources():
        stem = source.relative_to(PROTO_ROOT).with_suffix("")
        files += [out / f"{stem}_pb2.py", out / f"{stem}_pb2.pyi", out / f"{stem}_pb2_grpc.py"]
    return files


def generate(out: Path) -> None:
    # protoc's own well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(source.relative_to(PROTO_ROOT)) for source in sources()),
    ]
    out.mkdir(parents=True, exist_ok=True)
    # protoc resolves the source paths against the include directory given first.
    if protoc.main([args[0], *args[1:]]) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
