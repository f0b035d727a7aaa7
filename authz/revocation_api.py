"""The ``doma.authz.v1.Revocation`` gRPC service and the admin listener that serves it.

Every call must carry ``authorization: Bearer <token>``: a token the authz server's own
:class:`TokenVerifier` accepts (same issuers, keys and checks as any request), not itself
revoked, whose ``scope`` (space-separated) or ``scp`` (list) includes the admin scope. Errors
never echo the token.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Mapping
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authz.api.v1 import revocation_pb2, revocation_pb2_grpc
from authz.errors import AlreadyExpired, InvalidRevocation, StoreUnavailable
from authz.revocation import RevocationCheck
from authz.revoker import Revoker, RevokeResult
from authz.tokens import TokenError, TokenVerifier, bearer_token

__all__ = ["AdminCredentials", "AdminServer", "RevocationServicer", "token_scopes"]

log = logging.getLogger("doma.authz.admin")
_SERVICE = "doma.authz.v1.Revocation"


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The OAuth scopes of a token: ``scope`` (space-separated) and ``scp`` (list or string)."""
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(v for v in value if isinstance(v, str))
    return frozenset(scopes)


class AdminCredentials:
    def __init__(
        self,
        verifier: TokenVerifier,
        scope: str,
        *,
        revocation: RevocationCheck | None = None,
        max_token_bytes: int = 8192,
    ):
        self._verifier = verifier
        self._scope = scope
        self._revocation = revocation
        self._max_bytes = max_token_bytes

    async def check(self, metadata: Mapping[str, str]) -> tuple[grpc.StatusCode, str] | None:
        """None when the caller may use the API, else the status and a message to answer."""
        header = metadata.get("authorization")
        if header is None:
            return grpc.StatusCode.UNAUTHENTICATED, "an admin bearer token is required"
        try:
            verified = await self._verifier.verify(bearer_token(header, self._max_bytes))
        except TokenError as exc:
            return grpc.StatusCode.UNAUTHENTICATED, f"admin token refused: {exc.reason}"
        if self._revocation is not None:
            reason = await self._revocation.check(verified.claims)
            if reason is not None:
                return grpc.StatusCode.UNAUTHENTICATED, f"admin token refused: {reason}"
        if self._scope not in token_scopes(verified.claims):
            return grpc.StatusCode.PERMISSION_DENIED, f"the token lacks the scope {self._scope!r}"
        return None


class RevocationServicer(revocation_pb2_grpc.RevocationServicer):  # type: ignore[misc]
    """The revocation calls. Served only through :func:`_handlers`, which checks the caller's
    credentials before it decodes the request: nothing a caller sends is parsed before that."""

    def __init__(self, revoker: Revoker, credentials: AdminCredentials):
        self._revoker = revoker
        self._credentials = credentials

    async def Revoke(
        self, request: revocation_pb2.RevokeRequest, context: grpc.aio.ServicerContext
    ) -> revocation_pb2.RevokeResponse:
        try:
            result = await self._revoker.revoke_token(request.jti, float(request.exp))
        except (InvalidRevocation, StoreUnavailable) as exc:
            await _abort(context, exc)
        log.info("token revoked", extra={"event": "revoked", "kind": "jti", "epoch": result.epoch})
        return _response(result)

    async def RevokeSubject(
        self, request: revocation_pb2.RevokeSubjectRequest, context: grpc.aio.ServicerContext
    ) -> revocation_pb2.RevokeResponse:
        before = request.before if request.before and math.isfinite(request.before) else None
        if request.before and before is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "before must be a finite time")
        try:
            result = await self._revoker.revoke_subject(request.subject, before)
        except (InvalidRevocation, StoreUnavailable) as exc:
            await _abort(context, exc)
        log.info(
            "subject revoked", extra={"event": "revoked", "kind": "subject", "epoch": result.epoch}
        )
        return _response(result)

    async def IsRevoked(
        self, request: revocation_pb2.IsRevokedRequest, context: grpc.aio.ServicerContext
    ) -> revocation_pb2.IsRevokedResponse:
        try:
            revoked = await self._revoker.is_revoked(
                request.jti or None, request.subject or None, request.issued_at or None
            )
        except (InvalidRevocation, StoreUnavailable) as exc:
            await _abort(context, exc)
        return revocation_pb2.IsRevokedResponse(revoked=revoked)

    async def authorize(self, context: grpc.aio.ServicerContext) -> None:
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        refused = await self._credentials.check(metadata)
        if refused is not None:
            await context.abort(*refused)


def _response(result: RevokeResult) -> revocation_pb2.RevokeResponse:
    return revocation_pb2.RevokeResponse(
        epoch=result.epoch, published=result.published, kept_until=result.kept_until
    )


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, AlreadyExpired):
        code = grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(exc, InvalidRevocation):
        code = grpc.StatusCode.INVALID_ARGUMENT
    else:
        code = grpc.StatusCode.UNAVAILABLE
    await context.abort(code, str(exc))
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def _handlers(servicer: RevocationServicer) -> grpc.GenericRpcHandler:
    """The service's handlers, decoding requests themselves: a malformed message is answered
    INVALID_ARGUMENT with its type named, instead of an internal error and a logged traceback."""

    def unary(method: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
        name = request_type.DESCRIPTOR.full_name

        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            await servicer.authorize(context)
            try:
                request = request_type.FromString(raw)
            except DecodeError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name}")
            return await method(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, response_serializer=response_type.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Revoke": unary(
                servicer.Revoke, revocation_pb2.RevokeRequest, revocation_pb2.RevokeResponse
            ),
            "RevokeSubject": unary(
                servicer.RevokeSubject,
                revocation_pb2.RevokeSubjectRequest,
                revocation_pb2.RevokeResponse,
            ),
            "IsRevoked": unary(
                servicer.IsRevoked,
                revocation_pb2.IsRevokedRequest,
                revocation_pb2.IsRevokedResponse,
            ),
        },
    )


def _probe(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise OSError(f"cannot listen on {listen}: {exc.strerror}") from exc


class AdminServer:
    """The admin gRPC listener: the revocation API and its own health service."""

    def __init__(self, servicer: RevocationServicer, *, listen: str, grace: float = 5.0):
        self._servicer = servicer
        self._listen = listen
        self._grace = grace
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        # Probe the address first: a grpc.aio server that failed to bind cannot be stopped
        # cleanly, and one left unstopped complains when it is collected after the loop ends.
        _probe(self._listen)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((_handlers(self._servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            self.port = server.add_insecure_port(self._listen)
        except RuntimeError:  # grpcio reports a port in use this way
            self.port = 0
        if not self.port:
            raise OSError(f"cannot listen on {self._listen}")
        await server.start()
        for service in ("", _SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def shutdown(self) -> None:
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self._grace)
