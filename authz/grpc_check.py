"""The Envoy ``envoy.service.auth.v3.Authorization/Check`` adapter over the decision core.

It only converts: a ``CheckRequest`` into a :class:`CheckInput`, a :class:`Decision` into a
``CheckResponse``. Allowed requests get ``OkHttpResponse`` headers with
``append_action: OVERWRITE_IF_EXISTS_OR_ADD`` (the deprecated ``append`` defaults to false in
ext_authz, so the action is always explicit) and the identity headers this decision does not set
in ``headers_to_remove`` (Envoy applies removals after it sets headers, so a set header is never
listed there), and the verified claims in ``dynamic_metadata.claims``.
"""

from __future__ import annotations

import logging
import time

import grpc
from cachetools import LRUCache
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from authz.check import CheckInput, Decider, Decision, deny
from authz.metrics import AuthzMetrics

__all__ = ["AuthorizationServicer", "check_input", "check_response"]

log = logging.getLogger("doma.authz.grpc")
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)


def check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    http = request.attributes.request.http
    headers: dict[str, str]
    if http.headers:
        headers = dict(http.headers)
    else:
        # Envoy sends header_map instead when encode_raw_headers is on: join repeats like it does.
        headers = {}
        for entry in http.header_map.headers:
            value = entry.raw_value.decode("utf-8", "replace") if entry.raw_value else entry.value
            name = entry.key.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    return CheckInput(
        method=http.method,
        path=http.path,
        headers=headers,
        source_principal=request.attributes.source.principal,
    )


def check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if decision.allowed:
        response = external_auth_pb2.CheckResponse(
            status=_OK_STATUS,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
                    )
                    for name, value in decision.headers_to_set
                ],
                headers_to_remove=list(decision.headers_to_remove),
            ),
        )
        if decision.claims:
            # Envoy's channel from ext_authz to later filters (and the edge gateway's scopes and
            # per-user limits in remote mode): the verified claims, never the token.
            response.dynamic_metadata.update({"claims": dict(decision.claims)})
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


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, authorizer: Decider, metrics: AuthzMetrics | None = None):
        self._authorizer = authorizer
        self._metrics = metrics
        # Decisions are reused objects (denials, per-token allows): build each response once.
        self._responses: LRUCache[Decision, external_auth_pb2.CheckResponse] = LRUCache(16_384)
        self._internal_error = check_response(deny(503, "internal_error"))

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = time.perf_counter()
        try:
            check = check_input(request)
            decision = self._authorizer.decide_now(check)
            if decision is None:
                decision = await self._authorizer.decide(check)
        except Exception:
            # Fail closed, and log the kind of failure only: never the request's headers.
            log.exception("check failed")
            return self._internal_error
        response = self._responses.get(decision)
        if response is None:
            response = self._responses[decision] = check_response(decision)
        if self._metrics is not None:
            self._metrics.observe("grpc", decision, time.perf_counter() - started)
        return response
