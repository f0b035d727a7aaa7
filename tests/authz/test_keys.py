"""Key sets: the last good keys kept; unknown-kid refetch single-flight, rate-limited, cached."""

import asyncio
import json

import httpx
import pytest
import respx

from authz.errors import KeySourceError
from authz.key_sources import JwksUrlFetcher
from authz.keys import KeyCache, KeyParseError, parse_jwks, parse_pem
from tests.authz.helpers import FakeFetcher
from tests.support.tokens import SigningKey, jwks


def cache_for(fetcher, clock, **policy):
    options = {"min_ttl": 60, "max_ttl": 3600, "default_ttl": 300, "refetch_min_interval": 5}
    options.update(policy)
    return KeyCache("iss", fetcher, clock=lambda: clock[0], **options)


async def test_unknown_kid_triggers_one_refetch_and_picks_up_a_rotated_key():
    old, new = SigningKey(), SigningKey()
    fetcher, clock = FakeFetcher(jwks(old)), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    fetcher.document = jwks(old, new)
    clock[0] += 6
    keys = await cache.keys_for_kid(new.kid)
    assert keys is not None and new.kid in keys.by_kid
    assert fetcher.calls == 2


async def test_unknown_kid_refetch_is_rate_limited():
    fetcher, clock = FakeFetcher(jwks(SigningKey())), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    clock[0] += 1  # within refetch_min_interval
    await cache.keys_for_kid("never-seen")
    assert fetcher.calls == 1


async def test_still_unknown_kid_waits_out_the_interval_then_may_refetch():
    fetcher, clock = FakeFetcher(jwks(SigningKey())), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    clock[0] += 10
    await cache.keys_for_kid("bogus")
    assert fetcher.calls == 2
    clock[0] += 1
    await cache.keys_for_kid("bogus")
    assert fetcher.calls == 2  # negatively cached: no fetch, no waiting
    late = SigningKey(kid="bogus")
    fetcher.document = jwks(late)
    clock[0] += 5
    keys = await cache.keys_for_kid("bogus")
    assert fetcher.calls == 3 and keys is not None and "bogus" in keys.by_kid


async def test_concurrent_unknown_kids_share_one_fetch():
    fetcher, clock = FakeFetcher(jwks(SigningKey())), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    clock[0] += 10
    await asyncio.gather(*(cache.keys_for_kid(f"kid-{i}") for i in range(50)))
    assert fetcher.calls == 2


async def test_failed_fetch_keeps_the_last_good_keys():
    key = SigningKey()
    fetcher, clock = FakeFetcher(jwks(key)), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    fetcher.fail = True
    keys = await cache.refresh()
    assert keys is not None and key.kid in keys.by_kid
    assert cache.failures == 1
    assert cache.next_refresh_in() <= 5  # retried soon, not after the full TTL


@pytest.mark.parametrize(("max_age", "ttl"), [(None, 300), (1, 60), (10**6, 3600), (900, 900)])
async def test_ttl_follows_max_age_within_floor_and_ceiling(max_age, ttl):
    fetcher, clock = FakeFetcher(jwks(SigningKey()), max_age=max_age), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    assert cache.next_refresh_in() == pytest.approx(ttl)


@respx.mock
async def test_url_fetcher_reads_max_age():
    respx.get("http://keys.test/jwks.json").respond(
        200, content=jwks(SigningKey()), headers={"cache-control": "public, max-age=120"}
    )
    async with httpx.AsyncClient() as client:
        fetched = await JwksUrlFetcher("http://keys.test/jwks.json", client, 1.0).fetch()
    assert fetched.max_age == 120 and len(fetched.keys) == 1


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(200, content=b"not json"),
        httpx.Response(200, json={"keys": []}),
    ],
)
async def test_url_fetcher_failures_are_key_source_errors(response):
    respx.get("http://keys.test/jwks.json").mock(return_value=response)
    async with httpx.AsyncClient() as client:
        with pytest.raises(KeySourceError):
            await JwksUrlFetcher("http://keys.test/jwks.json", client, 1.0).fetch()


def test_symmetric_and_encryption_keys_are_ignored():
    key = SigningKey()
    document = (
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},'
        b' {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},'
        + jwks(key)[len(b'{"keys": [') :]
    )
    keys = parse_jwks(document)
    assert list(keys.by_kid) == [key.kid]


@pytest.mark.parametrize(
    "jwk",
    [
        # X25519 is a key-agreement curve: no signing key, whatever "use" claims.
        {"kty": "OKP", "crv": "X25519", "use": "sig", "kid": "x", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed448", "kid": "ed448", "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AAAA", "y": "AAAA"},
        {"kty": "RSA", "kid": "rsa", "n": "", "e": "AQAB"},
    ],
)
def test_an_unusable_signing_key_fails_the_parse_with_a_key_error(jwk):
    with pytest.raises(KeyParseError, match="is not a usable public key"):
        parse_jwks(json.dumps({"keys": [jwk]}).encode())


def test_pem_public_key_is_loaded_and_private_key_refused():
    key = SigningKey()
    assert len(parse_pem(key.public_pem, "k1")) == 1
    with pytest.raises(KeyParseError):
        parse_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None)
