"""``python -m bench.chain_ablation``: what each policy of the full chain costs the gateway.

The ``doma-chain`` case's gateway, one policy at a time: the bare route (``same``), CORS alone,
a rate limit by route with and without its response headers, auth alone, the full chain, and the
chain's extra headers set statically by the ``headers`` policy (``static-headers``: the four
response headers, and an ``x-user`` request header where auth would set ``x-user-id``, which no
``headers`` rule may write; no policy logic). Every variant gets the chain
case's requests (token and ``Origin``); rounds interleave the variants, and each keeps its
lowest CPU per request (the gateway is CPU-bound on its own CPU throughout).

    .venv/bin/python -m bench.chain_ablation --rounds 4 --duration 5
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import gateway, machine, reports

_POLICIES = "    policies:\n"
_CORS = (
    "      - cors: {{allow_origins: [https://app.bench.invalid], allow_headers: [authorization]}}\n"
)
_RATE = "      - rate_limit: {{requests: 1000000, period_seconds: 1, limit_by: route}}\n"
_RATE_NO_HEADERS = _RATE.replace("route}}", "route, headers: false}}")
_STATIC = (
    "      - headers: {{request: {{add: {{x-user: bench-user}}}}, response: {{add: {{"
    "access-control-allow-origin: https://app.bench.invalid, vary: Origin, "
    "ratelimit-policy: '\"bench\";q=1000000;w=1', ratelimit: '\"bench\";r=999999;t=1'}}}}}}\n"
)


def _variant(policies: str, *, bypass: bool) -> str:
    """The chain routes with ``policies`` in place of the chain's (auth bypassed if asked)."""
    text = gateway.CHAIN_ROUTES
    start, end = text.index(_POLICIES), text.index("    versions:\n")
    text = text[:start] + (_POLICIES + policies if policies else "") + text[end:]
    if bypass:
        text = text.replace("    upstream: nginx\n", "    upstream: nginx\n    auth: bypass\n")
    return text


VARIANTS = {
    "same": _variant("", bypass=True),
    "cors": _variant(_CORS, bypass=True),
    "rate-limit": _variant(_RATE, bypass=True),
    "rate-limit-no-headers": _variant(_RATE_NO_HEADERS, bypass=True),
    "auth": _variant("      - auth\n", bypass=False),
    "full": gateway.CHAIN_ROUTES,
    "static-headers": _variant(_STATIC, bypass=True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chain_ablation", description=__doc__)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=reports.RESULTS / "chain-ablation.json")
    options = parser.parse_args(argv)
    names = options.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    settings = gateway.parser().parse_args(
        ["--duration", str(options.duration), "--warmup", "1", "--rate", "0"]
    )
    lowest: dict[str, float] = {}
    rounds: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as workdir:
        bench = gateway.Bench(settings, Path(workdir))
        try:
            for round_number in range(options.rounds):
                for name in names:
                    row = bench.throughput(gateway.Case("doma-chain", name), VARIANTS[name])
                    if "failed" in row:
                        raise SystemExit(f"{name}: {row['failed']}")
                    us = row["proxy_cpu_us_per_request"]
                    print(f"round {round_number + 1} {name:22} {row['rps']:>9,.0f} req/s"
                          f" {us:>7.1f} us/req", flush=True)  # fmt: skip
                    lowest[name] = min(lowest.get(name, us), us)
                    rounds.append({"round": round_number + 1, "variant": name, **row})
        finally:
            bench.close()
    base = lowest.get("same")
    for name, us in lowest.items():
        added = f" ({us - base:+.1f} over same)" if base is not None and name != "same" else ""
        print(f"{name:22} {us:7.1f} us/req{added}")
    reports.write(
        options.output,
        {"machine": machine.describe(), "settings": vars(options) | {"output": str(options.output)},
         "lowest_us_per_request": lowest, "rounds": rounds},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
