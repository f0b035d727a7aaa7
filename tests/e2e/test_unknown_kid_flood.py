"""Through a real Envoy over gRPC: a flood of tokens naming unknown keys while the issuer's JWKS
endpoint hangs must not hold up the checks of tokens whose key is known.

Each such token makes its check wait for a key fetch (one at a time, shared by every waiter)
until Envoy's 0.5 s deadline. Without a bound on waiting checks they hold every one of the
server's check threads, and a known token's check, decided without any wait, queues behind them.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import pytest

from doma_gateway.echo import EchoServer
from tests.e2e.test_envoy_ext_authz import Edge, routes_for, wait_serving
from tests.support import processes
from tests.support.http import send
from tests.support.jwks_server import JwksServer
from tests.support.tokens import SigningKey, jwks

pytestmark = pytest.mark.e2e

KEY = SigningKey()
FLOODERS = 64
SECONDS = 4.0
FLOOD_PACE = 0.25
PATH = "/api/v1/scan/results"
FLOOD = multiprocessing.get_context("spawn")


def with_unknown_kid(token: str) -> str:
    """``token`` with a fresh random kid: the key lookup, not the signature, decides its fate."""
    _, payload, signature = token.split(".")
    header = {"alg": "RS256", "typ": "JWT", "kid": uuid.uuid4().hex}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{payload}.{signature}"


def flood_forever(port: int, token: str, stop: Event, denied: Synchronized[int]) -> None:
    """Threads that each keep one check waiting, paced so that the checks denied at once do not
    turn this into a CPU load test. A process of its own: the measured client shares no GIL."""

    def one() -> None:
        while not stop.is_set():
            started = time.monotonic()
            forged = [("authorization", f"Bearer {with_unknown_kid(token)}")]
            status = send(port, PATH, forged).status
            if status not in (401, 503):
                raise AssertionError(f"a token with an unknown kid was answered {status}")
            with denied.get_lock():
                denied.value += 1
            stop.wait(FLOOD_PACE - (time.monotonic() - started))

    with ThreadPoolExecutor(FLOODERS) as pool:
        for future in [pool.submit(one) for _ in range(FLOODERS)]:
            future.result()


def test_unknown_kids_flooding_a_hanging_jwks_leave_known_tokens_answered_at_once(tmp_path):
    jwks_server = JwksServer(jwks(KEY))
    upstream = EchoServer().start()
    (tmp_path / "routes.yaml").write_text(routes_for(jwks_server.url, refetch=0.1))
    authz = processes.start(
        ["authz", "--routes", str(tmp_path / "routes.yaml"), "--listen", "127.0.0.1:0"]
    )
    edge = None
    stop = FLOOD.Event()
    denied = FLOOD.Value("i", 0)
    try:
        wait_serving(authz.port("grpc"))
        edge = Edge(tmp_path, authz.port("grpc"), upstream)
        token = KEY.token(sub="known")
        known = [("authorization", f"Bearer {token}")]
        assert send(edge.port, PATH, known).status == 200
        jwks_server.delay = 30.0  # every later fetch hangs past its 1 s timeout
        flood = FLOOD.Process(target=flood_forever, args=(edge.port, token, stop, denied))
        flood.start()
        statuses: list[int] = []
        took: list[float] = []
        try:
            time.sleep(1.0)
            deadline = time.monotonic() + SECONDS
            while time.monotonic() < deadline:
                started = time.monotonic()
                statuses.append(send(edge.port, PATH, known).status)
                took.append(time.monotonic() - started)
        finally:
            stop.set()
            flood.join(10)
        # The flood was denied (401 unknown key, or 503 while its checks could not wait) ...
        assert flood.exitcode == 0 and denied.value > 0
        # ... and the known token was allowed every time, most often without queueing behind
        # it: a check waiting for the fetch takes up to Envoy's 0.5 s deadline.
        assert statuses.count(200) == len(statuses), set(statuses)
        assert statistics.median(took) < 0.25, (statistics.median(took), max(took), len(took))
    finally:
        if edge is not None:
            edge.close()
        authz.stop()
        upstream.stop()
        jwks_server.close()
