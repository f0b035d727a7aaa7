"""Key sets: the last good keys kept; unknown-kid refetch single-flight, rate-limited, cached."""

import asyncio
import contextlib
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


def _nested(depth: int) -> bytes:
    return b'{"keys": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "document",
    [
        {"keys": [{"kty": ["RSA"], "kid": "a", "n": "AQAB", "e": "AQAB"}]},
        {"keys": [{"kty": {"RSA": 1}, "kid": "a"}]},
        None,
    ],
    ids=["kty a list", "kty an object", "nested a hundred thousand deep"],
)
def test_a_jwks_of_any_shape_fails_the_parse_with_a_key_error(document):
    data = _nested(100_000) if document is None else json.dumps(document).encode()
    with pytest.raises(KeyParseError):
        parse_jwks(data)


def test_a_key_whose_key_ops_do_not_allow_verify_is_ignored():
    key, other = SigningKey(), SigningKey()
    document = json.loads(jwks(key, other))
    document["keys"][0]["key_ops"] = ["encrypt"]
    document["keys"][1]["key_ops"] = ["verify"]
    assert list(parse_jwks(json.dumps(document).encode()).by_kid) == [other.kid]


class _Broken(FakeFetcher):
    async def fetch(self):  # type: ignore[no-untyped-def]
        self.calls += 1
        raise RuntimeError("a source failing some other way")


async def test_a_source_failing_any_way_is_one_failed_fetch_and_the_keys_stay():
    key = SigningKey()
    fetcher, clock = FakeFetcher(jwks(key)), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    cache._fetcher = _Broken(b"")
    keys = await cache.refresh()
    assert keys is not None and key.kid in keys.by_kid
    assert cache.failures == 1 and cache.next_refresh_in() <= 5


class _Slow(FakeFetcher):
    async def fetch(self):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.2)
        return await super().fetch()


async def test_a_check_that_stops_waiting_does_not_cancel_the_fetch_for_the_others():
    old, new = SigningKey(), SigningKey()
    fetcher, clock = _Slow(jwks(old)), [100.0]
    cache = cache_for(fetcher, clock)
    await cache.refresh()
    fetcher.document = jwks(old, new)
    clock[0] += 10
    # Envoy's 200 ms deadline, shorter than the fetch: the check gives up...
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cache.keys_for_kid(new.kid), 0.05)
    # ...and the fetch it started still completes, for the next check.
    await asyncio.sleep(0.3)
    assert cache.keys is not None and new.kid in cache.keys.by_kid
    assert fetcher.calls == 2


@contextlib.asynccontextmanager
async def _serving(handler):  # type: ignore[no-untyped-def]
    """A one-off HTTP server on loopback; its connections are cut when the block ends."""
    handlers: set[asyncio.Task[None]] = set()

    async def connected(reader, writer):  # type: ignore[no-untyped-def]
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks.json"
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_the_url_fetcher_timeout_bounds_the_whole_fetch():
    async def trickle(reader, writer):  # type: ignore[no-untyped-def]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(50):  # one byte every 0.1 s: each read is quick, the whole is not
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    async with _serving(trickle) as url, httpx.AsyncClient() as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(KeySourceError, match="TimeoutError"):
            await JwksUrlFetcher(url, client, 0.5).fetch()
        assert asyncio.get_running_loop().time() - started < 2


async def test_the_url_fetcher_stops_reading_at_the_size_cap():
    sent = [0]

    async def endless(reader, writer):  # type: ignore[no-untyped-def]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        for _ in range(2000):  # 128 MiB, unless the reader stops first
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent[0] += len(chunk)

    async with _serving(endless) as url:
        async with httpx.AsyncClient() as client:
            with pytest.raises(KeySourceError, match="larger than 1 MiB"):
                await JwksUrlFetcher(url, client, 5.0).fetch()
        await asyncio.sleep(0.1)
        assert sent[0] < 16 * 1024 * 1024


def test_an_rsa_key_under_2048_bits_is_no_signing_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 (the point)
    strong = SigningKey()
    document = json.loads(jwks(strong))
    document["keys"].append({**json.loads(RSAAlgorithm.to_jwk(weak)), "kid": "weak"})
    assert list(parse_jwks(json.dumps(document).encode()).by_kid) == [strong.kid]
    pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyParseError, match="1024 bits"):
        parse_pem(pem, None)
