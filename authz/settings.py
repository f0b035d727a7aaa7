"""The authz configuration as frozen, typed objects, parsed once from the routes YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthSettings",
    "ClaimHeader",
    "IssuerSettings",
    "JwksCachePolicy",
    "KeySourceSettings",
    "RevocationCacheSettings",
    "RevocationSettings",
]

# HMAC algorithms are absent on purpose: a public key must never double as a shared secret
# (PyJWT CVE-2022-29217), and "none" is never a choice.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)

KeySourceKind = Literal["jwks_url", "jwks_file", "public_key_file", "public_key"]


@dataclass(frozen=True, slots=True)
class JwksCachePolicy:
    """How long fetched key sets live and how often an unknown ``kid`` may trigger a refetch."""

    min_ttl: float = 60.0
    max_ttl: float = 3600.0
    default_ttl: float = 300.0
    refetch_min_interval: float = 5.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class KeySourceSettings:
    kind: KeySourceKind
    # A URL for jwks_url, a path for the *_file kinds, PEM text for public_key.
    location: str
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    issuer: str
    audiences: tuple[str, ...]
    keys: KeySourceSettings
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = 30.0
    required_claims: tuple[str, ...] = ("exp",)
    jwks_cache: JwksCachePolicy = field(default_factory=JwksCachePolicy)


@dataclass(frozen=True, slots=True)
class ClaimHeader:
    """A verified claim copied into a request header for the upstream."""

    claim: str
    header: str


@dataclass(frozen=True, slots=True)
class RevocationCacheSettings:
    """The local cache of revocation lookups in each instance."""

    enabled: bool = True
    max_entries: int = 100_000
    # A backstop only: events and the epoch check keep entries fresh long before this.
    ttl: float = 60.0


@dataclass(frozen=True, slots=True)
class RevocationSettings:
    """Where revocations are stored and how every instance learns about new ones."""

    # memory://[name], redis://, rediss://, redis+sentinel://, redis+cluster://
    store: str = "memory://"
    # memory://[name], redis..., amqp://, amqps://
    bus: str = "memory://"
    # Prefix of every Redis key (hash-tagged), the Pub/Sub channel and the AMQP exchange.
    key_prefix: str = "doma:revocation"
    cache: RevocationCacheSettings = field(default_factory=RevocationCacheSettings)
    epoch_check_interval: float = 1.0
    store_timeout: float = 0.25
    on_store_error: Literal["deny", "allow"] = "deny"
    breaker_failures: int = 3
    breaker_reset: float = 2.0
    # How long "every token of this subject issued before T" is kept: the longest token lifetime.
    subject_ttl: float = 86_400.0
    admin_scope: str = "doma.revocation.admin"
    # Which dependencies must be up for gRPC health to report SERVING.
    readiness: tuple[Literal["store", "bus"], ...] = ("store",)
    bus_heartbeat: float = 2.0
    reconnect_initial: float = 0.1
    reconnect_max: float = 5.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    issuers: tuple[IssuerSettings, ...]
    claims_to_headers: tuple[ClaimHeader, ...] = ()
    bypass: tuple[str, ...] = ()
    max_token_bytes: int = 8192
    token_cache_size: int = 10_000
    # None: no revocation checks (tokens are valid until they expire).
    revocation: RevocationSettings | None = None
    # Where the section was read from, for messages.
    source: str = "<config>"

    @property
    def identity_headers(self) -> tuple[str, ...]:
        return tuple(mapping.header for mapping in self.claims_to_headers)
