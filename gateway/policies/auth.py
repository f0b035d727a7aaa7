"""Authentication: in-process with the authz decision core, or remotely over Envoy's ext-authz.

In-process (``- auth``) uses the very :class:`authz.core.Authorizer`, key caches, revocation
cache and invalidation bus that ``doma-gateway authz`` runs, wired once by the composition root,
so one process can serve both roles and both decide alike. Remote (``- auth: {ext_authz: ...}``)
is :mod:`gateway.policies.ext_authz`.

Identity headers are stripped from the client's request by the chain's fixed outermost step,
on every route; here an allowed request gets the ones the decision sets, and the verified claims
go downstream in ``scope["doma.claims"]`` for scopes, roles and per-user rate limits.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from authz.check import CheckInput, Decision, RepeatDecider
from authz.errors import ConfigError
from authz.tokens import CredentialMemo
from authz.yamlnodes import Node
from gateway.asgi import CONNECTION, ASGIApp, Receive, Scope, Send
from gateway.policies.denial import send_json
from gateway.policies.metrics import PolicyMetrics
from gateway.policies.spec import ChainContext, PolicySpec, header_names

__all__ = [
    "CLAIMS",
    "SPEC",
    "AuthPolicy",
    "AuthPolicySettings",
    "Authorizer",
    "ExtAuthzSettings",
    "check_input",
]

CLAIMS = "doma.claims"
_EXT_AUTHZ_KEYS = (
    "grpc_service",
    "timeout_seconds",
    "failure_mode_allow",
    "status_on_error",
    "identity_headers",
)


# The decision core's port: a cached token is decided without scheduling a coroutine, and a
# connection's repeated credential without building a CheckInput.
Authorizer = RepeatDecider


@dataclass(frozen=True, slots=True)
class ExtAuthzSettings:
    """An Envoy-compatible ext-authz gRPC server, with Envoy's names and defaults."""

    grpc_service: str
    timeout: float = 0.2
    failure_mode_allow: bool = False
    status_on_error: int = 403
    # Headers the server sets from a token: never taken from the client.
    identity_headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthPolicySettings:
    # None: in-process, with the routes' auth: section.
    ext_authz: ExtAuthzSettings | None = None


def parse(node: Node | None, item: Node) -> AuthPolicySettings:
    if node is None:
        return AuthPolicySettings()
    mapping = node.mapping(("ext_authz",))
    ext = mapping.get("ext_authz")
    if ext is None:
        return AuthPolicySettings()
    e = ext.mapping(_EXT_AUTHZ_KEYS)
    target_node = e.require("grpc_service")
    target = target_node.str()
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise target_node.error(f"grpc_service must be HOST:PORT, got {target!r}")
    timeout = e.get("timeout_seconds")
    allow = e.get("failure_mode_allow")
    status = e.get("status_on_error")
    identity = e.get("identity_headers")
    return AuthPolicySettings(
        ExtAuthzSettings(
            grpc_service=target,
            timeout=timeout.float(minimum=0.001, maximum=60) if timeout is not None else 0.2,
            failure_mode_allow=allow.bool() if allow is not None else False,
            status_on_error=status.int(minimum=400, maximum=599) if status is not None else 403,
            identity_headers=header_names(identity) if identity else (),
        )
    )


_ENCODED = {"authorization": b"authorization"}


class RequestHeaders(Mapping[str, str]):
    """The request's headers as the core reads them: lower-case names, repeats joined by ``,``.

    Looked up on demand from the raw ASGI list instead of decoding every header into a dict:
    the core asks for one or two names per request.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self._raw = raw

    def get(self, name: str, default: Any = None) -> Any:
        # Overridden for speed: Mapping.get goes through __getitem__ and a KeyError.
        key = _ENCODED.get(name) or name.encode("latin-1")
        found: str | None = None
        for header, value in self._raw:
            if header == key:
                text = value.decode("latin-1")
                # Joined as Envoy does, so the core sees every value (two Authorization headers
                # fail).
                found = text if found is None else f"{found},{text}"
        return default if found is None else found

    def __getitem__(self, name: str) -> str:
        found: str | None = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n.decode("latin-1") for n, _ in self._raw))

    def __len__(self) -> int:
        return len({n for n, _ in self._raw})


def check_input(scope: Scope) -> CheckInput:
    """What the decision core needs: the raw target (query included), the headers, and the
    client connection's credential memo when the server keeps per-connection state."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    target = raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
    memo: CredentialMemo | None = None
    state = scope.get(CONNECTION)
    if state is not None:
        memo = state.get(CredentialMemo)
        if memo is None:
            memo = state[CredentialMemo] = CredentialMemo()
    # Positional: a dataclass's __init__ takes keywords a little slower.
    return CheckInput(scope["method"], target, RequestHeaders(scope["headers"]), "", memo)


def _only_authorization(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's ``Authorization`` value as the core reads it, when it sent exactly one."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return None
            found = value
    return found.decode("latin-1") if found is not None else None


class AuthPolicy:
    """In-process authentication of a route that requires a token."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Authorizer,
        metrics: PolicyMetrics,
        stripped: frozenset[bytes] = frozenset(),
    ):
        self.app = app
        self._authorizer = settings
        self._metrics = metrics
        # Identity headers the chain's outermost step has already removed from the request.
        self._stripped = stripped

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        state = scope.get(CONNECTION)
        memo = state.get(CredentialMemo) if state is not None else None
        if memo is not None:
            # The connection's credential again, most likely: decided without a CheckInput.
            header = _only_authorization(scope["headers"])
            if header is not None:
                path = scope["doma.match"].path
                decision = self._authorizer.decide_repeat(memo, header, path)
                if decision is not None:
                    return self._pass(decision, scope, receive, send)
        check = check_input(scope)
        decision = self._authorizer.decide_now(check)
        if decision is None:
            return self._decide_then_pass(check, scope, receive, send)
        return self._pass(decision, scope, receive, send)

    async def _decide_then_pass(
        self, check: CheckInput, scope: Scope, receive: Receive, send: Send
    ) -> None:
        decision = await self._authorizer.decide(check)
        await self._pass(decision, scope, receive, send)

    def _pass(
        self, decision: Decision, scope: Scope, receive: Receive, send: Send
    ) -> Awaitable[None]:
        """The request on to the next app with the decision's identity, or its denial."""
        if not decision.allowed:
            self._metrics.denial("auth", decision.reason).inc()
            return _deny(decision, scope["doma.request_id"], send)
        # Kept on the decision (the core reuses it for a repeated token): the identity headers
        # to set as bytes, and the names to drop from the request, or None when the outermost
        # step has removed them all already.
        identity: _Identity | None = decision.wire.get(self)
        if identity is None:
            identity = decision.wire[self] = self._identity(decision)
        if identity.drop is None:
            # Nothing to remove (the outermost step did): add the identity, no copy.
            scope["headers"].extend(identity.to_set)
        else:
            drop = identity.drop
            headers = [(n, v) for n, v in scope["headers"] if n not in drop]
            headers.extend(identity.to_set)
            scope["headers"] = headers
        scope[CLAIMS] = decision.claims
        return self.app(scope, receive, send)

    def _identity(self, decision: Decision) -> _Identity:
        to_set = tuple((n.encode(), v.encode()) for n, v in decision.headers_to_set)
        drop = frozenset(n.encode() for n in decision.headers_to_remove) | {n for n, _ in to_set}
        return _Identity(to_set, None if drop <= self._stripped else drop)


class _Identity(NamedTuple):
    to_set: tuple[tuple[bytes, bytes], ...]
    drop: frozenset[bytes] | None


async def _deny(decision: Decision, request_id: str, send: Send) -> None:
    try:
        payload: Any = json.loads(decision.body) if decision.body else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    payload.setdefault("error", "unauthorized" if decision.status == 401 else "forbidden")
    payload.setdefault("reason", decision.reason)
    payload["request_id"] = request_id
    headers = [
        (name.lower().encode(), value.encode())
        for name, value in decision.response_headers
        if name.lower() not in ("content-type", "content-length")
    ]
    await send_json(send, decision.status, json.dumps(payload).encode(), headers, request_id)


def build(app: ASGIApp, settings: AuthPolicySettings, context: ChainContext) -> ASGIApp:
    if context.route.auth == "bypass":
        # No token needed; the chain's outermost step has already stripped identity headers.
        return app
    resources = context.resources
    if settings.ext_authz is not None:
        from gateway.policies.ext_authz import ExtAuthzPolicy

        return ExtAuthzPolicy(
            app,
            settings=settings.ext_authz,
            client=resources.ext_authz_client(settings.ext_authz),
            metrics=resources.metrics,
            client_address=resources.client_address(context.gateway.trusted_proxies),
        )
    if resources.authorizer is None:
        raise ConfigError(
            f"route {context.label} requires auth, but no routes file has an 'auth:' section "
            "(add one, use auth: {ext_authz: ...}, or set auth: bypass; a running gateway "
            "reads the auth: section at start-up, so one added since takes a restart)",
            file=context.route.source,
        )
    return AuthPolicy(
        app,
        settings=resources.authorizer,
        metrics=resources.metrics,
        stripped=frozenset(resources.identity_spellings),
    )


SPEC = PolicySpec(parse=parse, build=build)
