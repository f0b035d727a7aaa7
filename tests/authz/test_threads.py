"""The decision core under grpc's thread pool: checks on several threads while the loop mutates.

The gRPC adapter decides cached checks on grpc's threads while the event loop verifies new
tokens, fills the caches and applies revocation events. The caches reorder themselves on every
read, so without their locks one thread evicts what another is moving (a KeyError) or answers with
another token's identity. The switch interval is shrunk so threads interleave inside cache calls.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time

from authz.check import CheckInput, Decision
from authz.core import Authorizer
from authz.revocation import RevocationEvent
from authz.revocation_cache import RevocationCache
from authz.revocation_memory import MemoryStore
from authz.settings import RevocationCacheSettings
from tests.authz.helpers import build_core

THREADS = 6
TOKENS = 48
SECONDS = 2.5


def _check(token: str) -> CheckInput:
    return CheckInput("GET", "/api/v1/scan/x", {"authorization": f"Bearer {token}"})


async def test_cached_checks_on_many_threads_while_the_loop_fills_and_revokes() -> None:
    # Caches far smaller than the token set: every verification on the loop evicts.
    core = await build_core(cache_size=8)
    revocation = RevocationCache(
        MemoryStore(), cache=RevocationCacheSettings(max_entries=8, ttl=60)
    )
    revocation.bus_connected_changed(True)
    revocation.epoch_checked(0)
    authorizer = Authorizer(core.authorizer.settings, core.verifier, revocation)
    now = int(time.time())
    subjects = [f"user-{n}" for n in range(TOKENS)]
    tokens = [core.key.token(sub=s, jti=f"j-{n}", iat=now - 5) for n, s in enumerate(subjects)]
    expected = dict(zip(tokens, subjects, strict=True))
    errors: list[BaseException] = []
    wrong: list[tuple[str, Decision]] = []
    stop = threading.Event()

    def on_thread() -> None:
        chooser = random.Random()
        try:
            while not stop.is_set():
                token = chooser.choice(tokens)
                decision = authorizer.decide_now(_check(token))
                if (
                    decision is not None
                    and dict(decision.headers_to_set).get("x-user-id") != expected[token]
                ):
                    wrong.append((expected[token], decision))
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=on_thread) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + SECONDS
        epoch = 0
        while time.monotonic() < deadline:
            token = random.choice(tokens)
            decision = await authorizer.decide(_check(token))
            assert dict(decision.headers_to_set).get("x-user-id") == expected[token]
            # Events for jtis no check uses, so every answer stays "allowed".
            epoch += 1
            revocation.apply(
                RevocationEvent("jti", f"other-{epoch}", time.time() + 60, epoch, time.time())
            )
            if epoch % 50 == 0:
                revocation.flush("epoch_changed")
            await asyncio.sleep(0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    assert not wrong, wrong[:3]
    assert core.verifier.cache_hits > 0
