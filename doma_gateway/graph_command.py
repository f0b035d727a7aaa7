"""``doma-gateway graph PATH --format mermaid|dot|svg``: the domain map of a routes YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.domain_map import domain_map, dot, mermaid
from gateway.domain_map_svg import svg
from gateway.routes_loader import load_routes

__all__ = ["add_graph_parser", "run_graph"]

_RENDER = {"mermaid": mermaid, "dot": dot, "svg": svg}


def add_graph_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = commands.add_parser(
        "graph",
        help="draw the domain map: domains by layer, dependencies, versions and route counts",
    )
    graph.add_argument("routes", type=Path, help="routes YAML file or directory")
    graph.add_argument("--format", choices=tuple(_RENDER), default="mermaid")
    graph.add_argument(
        "--output", "-o", type=Path, default=None, help="write here instead of stdout"
    )


def run_graph(args: argparse.Namespace) -> int:
    text = _RENDER[args.format](domain_map(load_routes(args.routes)))
    if args.output is not None:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
