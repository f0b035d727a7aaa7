"""Building the decision core around in-memory keys, for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.core import Authorizer
from authz.keys import FetchedKeys, KeyCache, KeySet, parse_jwks
from authz.settings import AuthSettings, ClaimHeader, IssuerSettings, KeySourceSettings
from authz.tokens import TokenVerifier
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, jwks


@dataclass
class FakeFetcher:
    """A key source whose document a test can change; counts fetches, can be made to fail."""

    document: bytes
    calls: int = 0
    fail: bool = False
    max_age: float | None = None

    async def fetch(self) -> FetchedKeys:
        from authz.errors import KeySourceError

        self.calls += 1
        if self.fail:
            raise KeySourceError("unreachable")
        return FetchedKeys(parse_jwks(self.document), self.max_age)


def issuer(**overrides: object) -> IssuerSettings:
    values: dict[str, object] = {
        "issuer": ISSUER,
        "audiences": (AUDIENCE,),
        "keys": KeySourceSettings("jwks_url", "http://keys.test/jwks.json"),
    }
    values.update(overrides)
    return IssuerSettings(**values)  # type: ignore[arg-type]


@dataclass
class Core:
    key: SigningKey
    fetcher: FakeFetcher
    key_cache: KeyCache
    verifier: TokenVerifier
    authorizer: Authorizer
    clock: list[float] = field(default_factory=lambda: [1000.0])


async def build_core(
    *keys: SigningKey,
    bypass: tuple[str, ...] = ("/api/v1/*/health",),
    claims_to_headers: tuple[tuple[str, str], ...] = (
        ("sub", "x-user-id"),
        ("email", "x-user-email"),
    ),
    issuer_settings: IssuerSettings | None = None,
    cache_size: int = 100,
) -> Core:
    keys = keys or (SigningKey(),)
    fetcher = FakeFetcher(jwks(*keys))
    clock = [1000.0]
    key_cache = KeyCache(
        ISSUER,
        fetcher,
        min_ttl=60,
        max_ttl=3600,
        default_ttl=300,
        refetch_min_interval=5,
        clock=lambda: clock[0],
    )
    await key_cache.refresh()
    issuer_settings = issuer_settings or issuer()
    settings = AuthSettings(
        issuers=(issuer_settings,),
        claims_to_headers=tuple(ClaimHeader(c, h) for c, h in claims_to_headers),
        bypass=bypass,
        max_token_bytes=4096,
        token_cache_size=cache_size,
    )
    verifier = TokenVerifier(settings.issuers, {ISSUER: key_cache}, cache_size=cache_size)
    return Core(keys[0], fetcher, key_cache, verifier, Authorizer(settings, verifier), clock)


__all__ = ["Core", "FakeFetcher", "KeySet", "build_core", "issuer"]
