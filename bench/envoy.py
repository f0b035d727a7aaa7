"""Envoy for each case, derived from the ext-authz bootstrap in ``config/envoy/``.

Every case keeps the same listener, route, upstream cluster and ``--concurrency 1``; only the
auth filter differs: none, ``ext_authz`` over gRPC or over HTTP (the bootstraps as written,
pointed at the case's server), or ``jwt_authn`` with the same issuer, audience, key and claim
header as ours.
"""

from __future__ import annotations

import copy
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.processes import free_port, pinned, start, stop
from doma_gateway.envoy_bootstrap import (
    EXT_AUTHZ_BOOTSTRAP,
    EXT_AUTHZ_HTTP_BOOTSTRAP,
    envoy_binary,
    render,
    set_check_protocol,
    wait_ready,
)

__all__ = ["Envoy", "bootstrap"]

_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"


def bootstrap(
    kind: str,
    *,
    listen_port: int,
    admin_port: int,
    upstream_port: int,
    authz_port: int = 0,
    jwt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The bootstrap for one case: ``none``, ``ext_authz``, ``ext_authz_http1``,
    ``ext_authz_http2`` or ``jwt_authn``."""
    config = render(
        EXT_AUTHZ_HTTP_BOOTSTRAP if kind.startswith("ext_authz_http") else EXT_AUTHZ_BOOTSTRAP,
        listen_port=listen_port,
        admin_port=admin_port,
        clusters={
            "doma-authz": ("127.0.0.1", authz_port or upstream_port),
            "upstream": ("127.0.0.1", upstream_port),
        },
    )
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters: list[dict[str, Any]] = manager["typed_config"]["http_filters"]
    index = next(i for i, f in enumerate(filters) if f["name"] == _EXT_AUTHZ)
    if kind == "none":
        del filters[index]
    elif kind == "jwt_authn":
        assert jwt is not None
        filters[index] = _jwt_authn(**jwt)
    elif kind in ("ext_authz_http1", "ext_authz_http2"):
        set_check_protocol(config, kind.removeprefix("ext_authz_"))
    elif kind != "ext_authz":
        raise ValueError(kind)
    return config


def _jwt_authn(
    *, issuer: str, audience: str, jwks: str, claim_header: tuple[str, str]
) -> dict[str, Any]:
    claim, header = claim_header
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": _JWT_AUTHN_TYPE,
            "providers": {
                "bench": {
                    "issuer": issuer,
                    "audiences": [audience],
                    "local_jwks": {"inline_string": jwks},
                    "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                    "claim_to_headers": [{"header_name": header, "claim_name": claim}],
                    # Envoy caches verified tokens only when asked; ours does too, so both do.
                    "jwt_cache_config": {"jwt_cache_size": 100},
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


class Envoy:
    def __init__(self, workdir: Path, cpu: int | None):
        self.workdir = workdir
        self.cpu = cpu
        self.port = free_port()
        self.admin_port = free_port()
        self._process: subprocess.Popen[str] | None = None

    def start(self, config: dict[str, Any], name: str) -> Envoy:
        path = self.workdir / f"envoy-{name}.yaml"
        path.write_text(yaml.safe_dump(copy.deepcopy(config)))
        argv = [
            envoy_binary(), "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1",
            "--log-level", "warning", "--disable-hot-restart",
        ]  # fmt: skip
        self._process = start(pinned(self.cpu, argv), self.workdir / f"envoy-{name}.log")
        try:
            wait_ready(self._process, self.admin_port)  # type: ignore[arg-type]
        except Exception:
            log = (self.workdir / f"envoy-{name}.log").read_text()[-800:]
            self.stop()
            raise RuntimeError(f"envoy did not start: {log}") from None
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stats(self, *prefixes: str) -> dict[str, int]:
        """Counters whose names start with one of ``prefixes``."""
        url = f"http://127.0.0.1:{self.admin_port}/stats?format=json"
        with urllib.request.urlopen(url, timeout=5) as reply:
            stats = json.load(reply)["stats"]
        return {
            s["name"]: int(s["value"])
            for s in stats
            if "value" in s and isinstance(s["value"], int) and s["name"].startswith(prefixes)
        }

    def stop(self) -> None:
        stop(self._process)
        self._process = None
