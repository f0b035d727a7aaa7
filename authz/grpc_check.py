"""The Envoy ``envoy.service.auth.v3.Authorization/Check`` adapter over the decision core.

It only converts: a ``CheckRequest`` into a :class:`CheckInput`, a :class:`Decision` into a
``CheckResponse``. Allowed requests get ``OkHttpResponse`` headers with
``append_action: OVERWRITE_IF_EXISTS_OR_ADD`` (the deprecated ``append`` defaults to false in
ext_authz, so the action is always explicit) and the identity headers this decision does not set
in ``headers_to_remove`` (Envoy applies removals after it sets headers, so a set header is never
listed there), and the verified claims in ``dynamic_metadata.claims``.

It serves grpc's synchronous server, not grpc.aio: a check that needs no I/O (a cached token
whose revocation state is known, or a denial before the token) is decided on the calling thread,
and only one that must wait (a key fetch, a revocation store read) is handed to the event loop.
grpc.aio costs about 1.5 times the CPU per call of the thread-pool server even for an empty
handler (bench/README.md, "Levers"); the core's caches are thread-safe for this.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2  # type: ignore[import-untyped]
from google.rpc import code_pb2, status_pb2

from authz.check import CheckInput, Decider, Decision, deny
from authz.metrics import AuthzMetrics

__all__ = ["CHECK_THREADS", "AuthorizationServicer", "check_input", "check_response"]

log = logging.getLogger("doma.authz.grpc")
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)
# A call without a deadline still gets an answer: every wait in ``decide`` has its own timeout
# (key fetch, store read), so this bound only caps a stuck loop.
_MAX_WAIT_SECONDS = 60.0
# Threads that run Check. A check holds one only while it runs or waits for I/O (a key fetch, a
# store read, each bounded by its own timeout); checks beyond this queue in grpc, not rejected.
CHECK_THREADS = 32
# At most this many of them wait at once. Tokens naming random kids while the issuer's JWKS
# endpoint hangs would otherwise hold every thread until Envoy's deadline, and checks that need
# no wait (a known token) would queue behind them; past the limit a check that must wait is
# answered 503 at once.
MAX_WAITING_CHECKS = CHECK_THREADS // 2


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    http = request.attributes.request.http
    headers: Mapping[str, str]
    if http.headers:
        # The protobuf map itself: the core reads one or two headers, and copying all of them
        # into a dict cost more than the rest of a cached check's Python work.
        headers = http.headers
    else:
        # Envoy sends header_map instead when encode_raw_headers is on: join repeats like it does.
        joined: dict[str, str] = {}
        headers = joined
        for entry in http.header_map.headers:
            value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
            name = entry.key.lower()
            joined[name] = f"{joined[name]},{value}" if name in joined else value
    # Positional: keywords cost a dataclass's __init__ more, on every check.
    return CheckInput(http.method, http.path, headers, request.attributes.source.principal)


def check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if decision.allowed:
        # Filled in place: nested constructor calls cost twice as much, and a fresh token's
        # decision is encoded once per request.
        response = external_auth_pb2.CheckResponse()
        response.status.SetInParent()  # OK, explicitly
        ok = response.ok_response
        ok.SetInParent()
        for name, value in decision.headers_to_set:
            option = ok.headers.add(append_action=_OVERWRITE)
            option.header.key = name
            option.header.value = value
        ok.headers_to_remove.extend(decision.headers_to_remove)
        if decision.claims:
            # Envoy's channel from ext_authz to later filters (and the edge gateway's scopes and
            # per-user limits in remote mode): the verified claims, never the token.
            _set_claims(response.dynamic_metadata.fields["claims"].struct_value, decision.claims)
        return response
    code = code_pb2.UNAUTHENTICATED if decision.status == 401 else code_pb2.PERMISSION_DENIED
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=decision.reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
                )
                for name, value in decision.response_headers
            ],
            body=decision.body.decode(),
        ),
    )


# Objects and lists nested deeper than this in one claim are left out of the answer's metadata.
# Each level is three protobuf messages (Value, Struct, map entry), and Envoy parses the answer
# with protobuf's default recursion limit of 100: deeper claims made the whole answer unreadable
# to Envoy, a 503 for a token the HTTP protocol allows. Real tokens nest two or three levels.
MAX_CLAIM_DEPTH = 16


def _set_claims(struct: struct_pb2.Struct, claims: Mapping[str, Any]) -> None:
    """``struct.update(claims)``, with the scalar claims every token has set directly.

    A claim a ``Struct`` cannot hold (an integer past a double's range, a lone surrogate) or that
    nests deeper than :data:`MAX_CLAIM_DEPTH` is left out rather than failing the check: the
    HTTP protocol, which sends no claims, allows the same token, and a policy that needs the
    claim then finds it missing and refuses.
    """
    fields = struct.fields
    for name, value in claims.items():
        try:
            # The order of Struct.update: bool before int, as bool is an int.
            if isinstance(value, str):
                fields[name].string_value = value
            elif isinstance(value, bool):
                fields[name].bool_value = value
            elif isinstance(value, int | float):
                fields[name].number_value = value
            elif _nests_within(value, MAX_CLAIM_DEPTH):
                struct.update({name: value})
        except (ValueError, OverflowError, TypeError):
            if name in fields:
                del fields[name]


def _nests_within(value: Any, depth: int) -> bool:
    """Whether ``value``'s objects and lists nest at most ``depth`` levels deep."""
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return True
    if depth == 0:
        return False
    return all(_nests_within(item, depth - 1) for item in items)


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """``Check`` for grpc's thread-pool server; ``loop`` runs the checks that must wait."""

    def __init__(
        self,
        authorizer: Decider,
        metrics: AuthzMetrics | None = None,
        *,
        loop: asyncio.AbstractEventLoop,
        max_waiting: int = MAX_WAITING_CHECKS,
    ):
        self._authorizer = authorizer
        self._metrics = metrics
        self._loop = loop
        self._internal_error = check_response(deny(503, "internal_error"))
        self._waiting = threading.BoundedSemaphore(max_waiting)
        self._too_many_waiting = deny(503, "too_many_waiting_checks")

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        try:
            check = check_input(request)
            decision = self._authorizer.decide_now(check)
            if decision is None:
                decision = self._wait_for(check, context)
            response = self._response(decision)
        except Exception:
            # Fail closed, and log the kind of failure only: never the request's headers.
            log.exception("check failed")
            return self._internal_error
        if self._metrics is not None:
            self._metrics.observe("grpc", decision, time.perf_counter() - started)
        return response

    def _wait_for(self, check: CheckInput, context: grpc.ServicerContext) -> Decision:
        """``decide`` run on the event loop, waited for at most until the call's deadline."""
        if not self._waiting.acquire(blocking=False):
            return self._too_many_waiting
        future = asyncio.run_coroutine_threadsafe(self._authorizer.decide(check), self._loop)
        try:
            # grpc reports "no deadline" as a huge number of seconds.
            remaining = context.time_remaining()
            wait = _MAX_WAIT_SECONDS if remaining is None else min(remaining, _MAX_WAIT_SECONDS)
            return future.result(timeout=wait)
        except FutureTimeout:
            # Envoy has given up on this call (its deadline passed): stop the work too.
            future.cancel()
            raise
        finally:
            self._waiting.release()

    @staticmethod
    def _response(decision: Decision) -> external_auth_pb2.CheckResponse:
        response: external_auth_pb2.CheckResponse | None = decision.wire.get("grpc")
        if response is None:
            response = decision.wire["grpc"] = check_response(decision)
        return response
