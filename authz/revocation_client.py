"""A small async client of the revocation API, for domain services (an auth service's logout).

::

    async with RevocationClient("127.0.0.1:9001", admin_token) as client:
        await client.revoke_token(claims["jti"], claims["exp"])   # this token only
        await client.revoke_subject(claims["sub"])                # every token issued until now

Errors arrive as :class:`RevocationApiError` with the gRPC status name (``INVALID_ARGUMENT``,
``FAILED_PRECONDITION`` for an expired token, ``UNAUTHENTICATED``, ``PERMISSION_DENIED``,
``UNAVAILABLE``) and the server's message.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import grpc

from authz.api.v1 import revocation_pb2, revocation_pb2_grpc
from authz.errors import RevocationError
from authz.revoker import RevokeResult

__all__ = ["RevocationApiError", "RevocationClient"]


class RevocationApiError(RevocationError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RevocationClient:
    def __init__(self, target: str, token: str, *, timeout: float = 5.0):
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = revocation_pb2_grpc.RevocationStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    async def __aenter__(self) -> RevocationClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def revoke_token(self, jti: str, exp: int | float) -> RevokeResult:
        request = revocation_pb2.RevokeRequest(jti=jti, exp=int(exp))
        response = await self._call(self._stub.Revoke, request)
        return RevokeResult(
            int(response.epoch), bool(response.published), float(response.kept_until)
        )

    async def revoke_subject(self, subject: str, before: float | None = None) -> RevokeResult:
        request = revocation_pb2.RevokeSubjectRequest(subject=subject, before=before or 0.0)
        response = await self._call(self._stub.RevokeSubject, request)
        return RevokeResult(
            int(response.epoch), bool(response.published), float(response.kept_until)
        )

    async def is_revoked(
        self, *, jti: str = "", subject: str = "", issued_at: float | None = None
    ) -> bool:
        request = revocation_pb2.IsRevokedRequest(
            jti=jti, subject=subject, issued_at=issued_at or 0.0
        )
        response = await self._call(self._stub.IsRevoked, request)
        return bool(response.revoked)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise RevocationApiError(exc.code().name, exc.details() or "") from exc
