"""The Envoy HTTP ext_authz adapter (``http_service``; Istio's ``envoyExtAuthzHttp``).

Envoy sends the original method, ``path_prefix`` + the original path, and the allowed headers.
A 200 allows: the identity headers ride on the answer (Envoy copies those named in
``allowed_upstream_headers`` onto the upstream request, overwriting client values) and
``x-envoy-auth-headers-to-remove`` lists the identity headers to strip. Any other status denies,
and Envoy returns it to the client with our headers and JSON body. Same core, same decisions as
the gRPC adapter: only the wire format differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from authz.check import CheckInput, Decision
from authz.tokens import CredentialMemo

__all__ = ["HEADERS_TO_REMOVE", "answer", "check_input", "http_reply"]

HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"


def check_input(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    path_prefix: str = "",
    memo: CredentialMemo | None = None,
) -> CheckInput:
    """A check from the request Envoy sent; repeated headers are joined with ``,`` like gRPC.
    ``memo`` is the connection's credential memo (see :class:`CredentialMemo`)."""
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    if path_prefix and target.startswith(path_prefix):
        target = target[len(path_prefix) :] or "/"
    return CheckInput(method=method, path=target, headers=joined, credential_memo=memo)


def answer(decision: Decision) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, headers and body answering ``decision``, whichever HTTP version carries them:
    an allow is a bodiless 200 with the identity headers and the list of those to remove."""
    if decision.allowed:
        headers = list(decision.headers_to_set)
        if decision.headers_to_remove:
            headers.append((HEADERS_TO_REMOVE, ",".join(decision.headers_to_remove)))
        return 200, headers, b""
    return decision.status, list(decision.response_headers), decision.body


def http_reply(decision: Decision, *, keep_alive: bool, head: bool = False) -> bytes:
    """The whole HTTP/1.1 response for ``decision``, ready to write; to a HEAD request, the
    same head without the body (RFC 9110 9.3.2)."""
    status, headers, body = answer(decision)
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"content-length: {len(body)}")
    if not keep_alive:
        lines.append("connection: close")
    # UTF-8, as Envoy writes a gRPC answer's header values: the same claim, the same bytes.
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)
