"""Remote authentication: ask an Envoy-compatible ext-authz gRPC server, apply its answer as Envoy.

The request goes out as Envoy builds it (``envoy.service.auth.v3.Authorization/Check``): the raw
request target as ``path`` (query included, not decoded), lower-cased headers with repeats
joined by ``,`` plus the ``:authority``, ``:method``, ``:path`` and ``:scheme`` pseudo-headers,
the source and destination addresses and the request id. The answer is applied the way Envoy's
ext_authz filter applies it:

- OK: ``headers`` are mutated in order by their action (the deprecated ``append`` wins when set:
  true appends to the value, false overwrites; otherwise ``append_action``), then
  ``headers_to_remove`` are removed (never pseudo-headers or ``host``); then
  ``query_parameters_to_set`` overwrite (or add) and ``query_parameters_to_remove`` drop
  parameters of the query the upstream gets; ``response_headers_to_add`` go on the response to
  the client. ``dynamic_metadata.claims``, when the server sends it, is the
  verified claims for the policies after this one.
- Denied: the status (403 when unset), headers and body go to the client. A JSON object body
  also gets the ``request_id``.
- Error (unreachable, timeout, ``error_response``, or an answer setting a header that is not
  one header line: a name that is not a token, a value with a control character):
  ``failure_mode_allow`` lets the request through as the client sent it; otherwise
  ``status_on_error`` (403) with reason ``ext_authz_error``. Fails closed.

Header values are the server's bytes (``raw_value``) or its ``value`` as UTF-8, as Envoy sends
them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.rpc import code_pb2

from gateway.asgi import ASGIApp, Message, Receive, Scope, Send
from gateway.headers import is_field
from gateway.policies.auth import CLAIMS, ExtAuthzSettings
from gateway.policies.client_ip import ClientAddress
from gateway.policies.denial import Denial
from gateway.policies.metrics import PolicyMetrics

__all__ = [
    "ExtAuthzClient",
    "ExtAuthzPolicy",
    "apply_mutations",
    "apply_query_mutations",
    "check_request",
]

log = logging.getLogger("doma.gateway.ext_authz")
RawHeaders = list[tuple[bytes, bytes]]
_Action = base_pb2.HeaderValueOption
_PROTECTED = frozenset({b"host"})
# What a key or value from the server may not carry into the query as is: separators, controls,
# space, non-ASCII, and a '%' that does not start an escape (an escape the server wrote stays).
_UNSAFE_IN_KEY = re.compile(r"[^A-Za-z0-9\-._~!$'()*+,;:@/?%]|%(?![0-9A-Fa-f]{2})")
_UNSAFE_IN_VALUE = re.compile(r"[^A-Za-z0-9\-._~!$'()*+,;:@/?=%]|%(?![0-9A-Fa-f]{2})")


class ExtAuthzClient:
    """One gRPC channel per ext-authz server, opened on first use (inside the serving loop)."""

    def __init__(self, settings: ExtAuthzSettings):
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._check: Any = None

    async def check(
        self, request: external_auth_pb2.CheckRequest
    ) -> external_auth_pb2.CheckResponse:
        if self._check is None:
            self._channel = grpc.aio.insecure_channel(self.settings.grpc_service)
            self._check = external_auth_pb2_grpc.AuthorizationStub(self._channel).Check
        return await self._check(request, timeout=self.settings.timeout)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._check = None


def check_request(scope: Scope, client_ip: str, request_id: str) -> external_auth_pb2.CheckRequest:
    """The ``CheckRequest`` Envoy would send for this request (the inverse of authz's reader)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    host = headers.get("host", "")
    headers[":authority"] = host
    headers[":method"] = scope["method"]
    headers[":path"] = target
    headers[":scheme"] = scope.get("scheme", "http")
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    http = attributes.request.http
    http.id = request_id
    http.method = scope["method"]
    http.path = target
    http.host = host
    http.scheme = scope.get("scheme", "http")
    http.protocol = "HTTP/" + scope.get("http_version", "1.1")
    http.headers.update(headers)
    attributes.request.time.GetCurrentTime()
    client = scope.get("client")
    if client:
        source = attributes.source.address.socket_address
        source.address = client_ip or client[0]
        source.port_value = int(client[1])
    server = scope.get("server")
    if server and server[1] is not None:
        destination = attributes.destination.address.socket_address
        destination.address = str(server[0])
        destination.port_value = int(server[1])
    return request


def _action(option: Any, response: bool) -> str:
    if option.HasField("append"):
        if option.append.value:
            # On a response (and a local reply) append=true has always meant another line.
            return "add" if response else "append"
        return "set"
    action = option.append_action
    if action == _Action.ADD_IF_ABSENT:
        return "add_if_absent"
    if action == _Action.OVERWRITE_IF_EXISTS:
        return "overwrite_if_exists"
    if action == _Action.OVERWRITE_IF_EXISTS_OR_ADD:
        return "set"
    return "add"


def apply_mutations(
    headers: RawHeaders,
    options: Iterable[Any],
    remove: Iterable[str] = (),
    *,
    response: bool = False,
) -> RawHeaders:
    """``headers`` after Envoy's header mutations, in order, then the removals."""
    out = list(headers)
    for option in options:
        name, value = _encoded(option)
        if name.startswith(b":") or name in _PROTECTED:
            continue
        if not value and not option.keep_empty_value:
            continue
        action = _action(option, response)
        present = any(n == name for n, _ in out)
        if action == "add" or (action == "add_if_absent" and not present):
            out.append((name, value))
        elif action == "append":
            if present:
                joined = b",".join([v for n, v in out if n == name] + [value])
                out = [(n, v) for n, v in out if n != name]
                out.append((name, joined))
            else:
                out.append((name, value))
        elif action == "set" or (action == "overwrite_if_exists" and present):
            out = [(n, v) for n, v in out if n != name]
            out.append((name, value))
    drop = {n.lower().encode("latin-1") for n in remove}
    drop = {n for n in drop if not n.startswith(b":") and n not in _PROTECTED}
    if drop:
        out = [(n, v) for n, v in out if n not in drop]
    return out


def _query_text(text: str, unsafe: re.Pattern[str]) -> str:
    return unsafe.sub(lambda m: quote(m.group(), safe=""), text)


def _encoded(option: Any) -> tuple[bytes, bytes]:
    """A header option's lower-cased name and its value, as the bytes Envoy would send."""
    header = option.header
    return header.key.lower().encode(), header.raw_value or header.value.encode()


def well_formed(response: external_auth_pb2.CheckResponse) -> bool:
    """Whether every header the answer sets can go out as one header line.

    The gateway writes these bytes into the upstream request and the client's response as they
    are: a line break in a value would start a header, or a whole request, of the server's (or
    whoever fed it) choosing.
    """
    ok, denied = response.ok_response, response.denied_response
    for options in (ok.headers, ok.response_headers_to_add, denied.headers):
        for option in options:
            name, value = _encoded(option)
            if not is_field(name.removeprefix(b":"), value):
                return False
    return True


def apply_query_mutations(query: bytes, to_set: Iterable[Any], to_remove: Iterable[str]) -> bytes:
    """``query`` after Envoy's query mutations: each key set replaces every parameter of that
    key (in the first one's place, else at the end), then the keys to remove are dropped.

    Keys compare as sent, not decoded (as Envoy's). What the server sends is taken as text and
    escaped where it would otherwise change the query's structure.
    """
    pairs = [
        (key, sep + value)
        for key, sep, value in (
            part.partition("=") for part in query.decode("latin-1").split("&") if part
        )
    ]
    for parameter in to_set:
        key = _query_text(parameter.key, _UNSAFE_IN_KEY)
        if not key:
            continue
        value = "=" + _query_text(parameter.value, _UNSAFE_IN_VALUE)
        at = next((i for i, (k, _) in enumerate(pairs) if k == key), None)
        pairs = [(k, v) for k, v in pairs if k != key]
        pairs.insert(len(pairs) if at is None else at, (key, value))
    drop = {_query_text(key, _UNSAFE_IN_KEY) for key in to_remove}
    return "&".join(k + v for k, v in pairs if k not in drop).encode("latin-1")


class ExtAuthzPolicy:
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: ExtAuthzSettings,
        client: ExtAuthzClient,
        metrics: PolicyMetrics,
        client_address: ClientAddress,
    ):
        self.app = app
        self._settings = settings
        self._client = client
        self._metrics = metrics
        self._address = client_address
        self._error = Denial(metrics, "auth", settings.status_on_error, "ext_authz_error")
        self._allowed_on_error = metrics.fallback("auth", "ext_authz_error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id: str = scope["doma.request_id"]
        request = check_request(scope, self._address.of(scope), request_id)
        try:
            response = await self._client.check(request)
        except (grpc.RpcError, OSError, TimeoutError) as exc:
            # Never the request's headers in a log line: they hold credentials.
            log.warning("ext-authz check failed", extra={"error": type(exc).__name__})
            response = None
        if response is not None and not well_formed(response):
            log.warning("ext-authz answer set a header that is not a header line")
            response = None
        if response is None or response.HasField("error_response"):
            if self._settings.failure_mode_allow:
                self._allowed_on_error.inc()
                await self.app(scope, receive, send)
                return
            await self._error.send(send, request_id)
            return
        if response.status.code != code_pb2.OK:
            await self._deny(response, request_id, send)
            return
        ok = response.ok_response
        if ok.headers or ok.headers_to_remove:
            scope["headers"] = apply_mutations(scope["headers"], ok.headers, ok.headers_to_remove)
        if ok.query_parameters_to_set or ok.query_parameters_to_remove:
            scope["query_string"] = apply_query_mutations(
                scope.get("query_string", b""),
                ok.query_parameters_to_set,
                ok.query_parameters_to_remove,
            )
        metadata = ok.dynamic_metadata if ok.HasField("dynamic_metadata") else None
        if metadata is None and response.HasField("dynamic_metadata"):
            metadata = response.dynamic_metadata
        scope[CLAIMS] = _claims(metadata)
        if ok.response_headers_to_add:
            send = _response_mutator(send, list(ok.response_headers_to_add))
        await self.app(scope, receive, send)

    async def _deny(
        self, response: external_auth_pb2.CheckResponse, request_id: str, send: Send
    ) -> None:
        denied = response.denied_response
        status = denied.status.code or 403
        body = denied.body.encode()
        reason = response.status.message or "denied"
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            reason = str(payload.get("reason", reason))
            payload["request_id"] = request_id
            body = json.dumps(payload).encode()
        self._metrics.denial("auth", _label(reason)).inc()
        headers = apply_mutations([], denied.headers, response=True)
        content_type = [(n, v) for n, v in headers if n == b"content-type"]
        headers = [(n, v) for n, v in headers if n not in (b"content-type", b"content-length")]
        start_headers = [
            *(
                content_type
                or [(b"content-type", b"application/json" if payload else b"text/plain")]
            ),
            (b"content-length", str(len(body)).encode()),
            *headers,
            (b"x-request-id", request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": start_headers})
        await send({"type": "http.response.body", "body": body})


def _label(reason: str) -> str:
    # A metric label from a remote server: bounded and plain, whatever the server sent.
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in reason.lower())[:64]
    return cleaned or "denied"


def _claims(metadata: Any) -> Mapping[str, Any] | None:
    if metadata is None or "claims" not in metadata.fields:
        return None
    claims = json_format.MessageToDict(metadata)["claims"]
    return claims if isinstance(claims, dict) else None


def _response_mutator(send: Send, options: list[Any]) -> Send:
    async def mutated(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = apply_mutations(list(message["headers"]), options, response=True)
        await send(message)

    return mutated
