"""The per-connection credential memo: it skips parsing and hashing a repeated credential, and
nothing else; every check that can change between two requests still runs."""

import time

from authz.check import CheckInput
from authz.revocation import RevocationEvent
from authz.revocation_cache import RevocationCache
from authz.revocation_memory import MemoryStore
from authz.settings import RevocationCacheSettings
from authz.tokens import CredentialMemo
from tests.authz.helpers import build_core
from tests.support.tokens import SigningKey, jwks


def check(token: str, memo: CredentialMemo, path: str = "/api/v1/scan/x") -> CheckInput:
    return CheckInput("GET", path, {"authorization": f"Bearer {token}"}, "", memo)


def parses(core) -> list[str]:
    """Count the token parses of ``core``'s verifier."""
    seen: list[str] = []
    parse = core.verifier._parse

    def counted(token: str):
        seen.append(token)
        return parse(token)

    core.verifier._parse = counted
    return seen


async def test_a_repeated_credential_is_recalled_and_counted_as_a_cache_hit():
    core = await build_core()
    memo, token = CredentialMemo(), core.key.token(sub="alice")
    first = core.authorizer.decide_now(check(token, memo))
    assert first is not None and first.allowed
    hashed: list[str] = []
    core.verifier.verify_now = lambda t: hashed.append(t)  # type: ignore[method-assign]
    for _ in range(3):
        assert core.authorizer.decide_now(check(token, memo)) is first
    assert hashed == []
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 3)


async def test_another_credential_on_the_connection_is_verified_and_replaces_the_memo():
    core = await build_core()
    memo = CredentialMemo()
    alice, bob = core.key.token(sub="alice"), core.key.token(sub="bob")
    seen = parses(core)
    for token, user in ((alice, "alice"), (bob, "bob"), (alice, "alice")):
        decision = core.authorizer.decide_now(check(token, memo))
        assert decision is not None and decision.headers_to_set == (("x-user-id", user),)
    # Each change of credential looks the token up again (alice is still in the token cache).
    assert seen == [alice, bob]
    assert memo.header == f"Bearer {alice}"


async def test_a_refused_credential_never_enters_the_memo():
    core = await build_core()
    memo = CredentialMemo()
    forged = SigningKey(kid=core.key.kid).token()
    for _ in range(2):
        decision = core.authorizer.decide_now(check(forged, memo))
        assert decision is not None and decision.reason == "invalid_signature"
    assert memo.header is None and memo.verified is None


async def test_a_recalled_token_is_not_used_past_its_expiry():
    core = await build_core()
    now = [time.time()]
    core.verifier._clock = lambda: now[0]
    memo, token = CredentialMemo(), core.key.token(exp=int(now[0]) + 600)
    seen = parses(core)
    for _ in range(2):
        assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    assert len(seen) == 1
    now[0] += 600 + 30 + 1  # past exp plus leeway, on the caches' clock
    core.authorizer.decide_now(check(token, memo))
    # Neither the memo nor the token cache served it: the token was read and judged again.
    assert len(seen) == 2


async def test_a_recalled_token_goes_with_its_key():
    kept, pulled = SigningKey(), SigningKey()
    core = await build_core(kept, pulled)
    memo, token = CredentialMemo(), pulled.token()
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    core.fetcher.document = jwks(kept)
    await core.key_cache.refresh()
    again = check(token, memo)
    decision = core.authorizer.decide_now(again) or await core.authorizer.decide(again)
    assert decision.reason == "unknown_key"


async def test_the_path_is_judged_on_every_request():
    core = await build_core()
    memo, token = CredentialMemo(), core.key.token()
    assert core.authorizer.decide_now(check(token, memo)).reason == "ok"  # type: ignore[union-attr]
    bypassed = core.authorizer.decide_now(check(token, memo, "/api/v1/scan/health"))
    assert bypassed is not None and bypassed.reason == "bypass"
    invalid = core.authorizer.decide_now(check(token, memo, "/api/v1/scan/\x00"))
    assert invalid is not None and invalid.reason == "invalid_path"


async def revocation_of(core) -> tuple[MemoryStore, RevocationCache]:
    """A revocation cache on ``core``, trusted as with the bus connected and the epoch read
    (answers come from the local cache), that knows ``carol-1``'s token is not revoked: checked
    once through the store, as a first request's check is."""
    store = MemoryStore()
    revocation = RevocationCache(store, cache=RevocationCacheSettings())
    revocation.bus_connected_changed(True)
    revocation.epoch_checked(0)
    core.authorizer._revocation = revocation
    first = check(core.key.token(sub="carol", jti="carol-1"), CredentialMemo())
    assert core.authorizer.decide_now(first) is None  # the store is asked once
    assert (await core.authorizer.decide(first)).allowed
    return store, revocation


async def revoke(store: MemoryStore, revocation: RevocationCache, jti: str) -> None:
    exp = time.time() + 3600
    epoch = await store.revoke_token(jti, exp)
    revocation.apply(RevocationEvent("jti", jti, exp, epoch, time.time()))


async def test_a_recalled_token_is_still_checked_for_revocation():
    core = await build_core()
    store, revocation = await revocation_of(core)
    memo, token = CredentialMemo(), core.key.token(sub="carol", jti="carol-1")
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    await revoke(store, revocation, "carol-1")
    decision = core.authorizer.decide_now(check(token, memo))
    assert decision is not None and decision.reason == "token_revoked"


async def test_no_memo_without_a_token_cache():
    core = await build_core(cache_size=0)
    memo, token = CredentialMemo(), core.key.token()
    seen = parses(core)
    for _ in range(2):
        assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    assert len(seen) == 2 and memo.verified is None


async def test_a_memo_filled_by_another_verifier_is_not_recalled():
    core, other = await build_core(), await build_core()
    memo, token = CredentialMemo(), core.key.token()
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    # The other core does not trust this key: the memo must not carry the verification over.
    elsewhere = check(token, memo)
    decision = other.authorizer.decide_now(elsewhere) or await other.authorizer.decide(elsewhere)
    assert decision.reason == "unknown_key"


# decide_repeat: the gateway's way to decide a connection's repeated credential (its only
# Authorization value, the target already refused if invalid) without building a CheckInput.
PATH = "/api/v1/scan/x"


def repeat(core, token: str, memo: CredentialMemo, path: str = PATH):
    return core.authorizer.decide_repeat(memo, f"Bearer {token}", path)


async def test_a_repeat_gets_the_decision_decide_now_gives_and_one_hit_each():
    core = await build_core()
    memo, token = CredentialMemo(), core.key.token(sub="alice")
    assert repeat(core, token, memo) is None  # nothing recalled yet: build the CheckInput
    first = core.authorizer.decide_now(check(token, memo))
    seen = parses(core)
    for _ in range(3):
        assert repeat(core, token, memo) is first
    assert seen == [] and (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 3)


async def test_a_repeat_of_another_credential_or_another_verifier_is_not_answered():
    core, other = await build_core(), await build_core()
    memo, token = CredentialMemo(), core.key.token(sub="alice")
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    assert repeat(core, core.key.token(sub="bob"), memo) is None
    assert core.authorizer.decide_repeat(memo, f"bearer {token}", PATH) is None
    assert repeat(other, token, memo) is None
    assert core.verifier.cache_hits == 0


async def test_a_repeat_is_not_answered_past_expiry_nor_once_its_key_is_pulled():
    kept, pulled = SigningKey(), SigningKey()
    core = await build_core(kept, pulled)
    now = [time.time()]
    core.verifier._clock = lambda: now[0]
    memo, token = CredentialMemo(), pulled.token(exp=int(now[0]) + 600)
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    core.fetcher.document = jwks(kept)
    await core.key_cache.refresh()
    assert repeat(core, token, memo) is None and memo.verified is None
    memo, token = CredentialMemo(), kept.token(exp=int(now[0]) + 600)
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    seen = parses(core)
    now[0] += 600 + 30 + 1  # past exp plus leeway, on the caches' clock
    assert repeat(core, token, memo) is None and memo.verified is None
    core.authorizer.decide_now(check(token, memo))
    assert seen == [token]  # read and judged again, not recalled


async def test_a_repeat_on_a_bypassed_path_gets_the_bypass_decision():
    core = await build_core()
    memo, token = CredentialMemo(), core.key.token()
    bypassed = repeat(core, token, memo, "/api/v1/scan/health")
    assert bypassed is core.authorizer.decide_now(check(token, memo, "/api/v1/scan/health"))
    assert bypassed is not None and bypassed.reason == "bypass"


async def test_a_repeat_is_checked_for_revocation_and_waits_for_the_store_like_decide_now():
    core = await build_core()
    store, revocation = await revocation_of(core)
    memo, token = CredentialMemo(), core.key.token(sub="carol", jti="carol-1")
    assert core.authorizer.decide_now(check(token, memo)).allowed  # type: ignore[union-attr]
    assert repeat(core, token, memo).allowed  # type: ignore[union-attr]
    await revoke(store, revocation, "carol-1")
    revoked = repeat(core, token, memo)
    assert revoked is not None and revoked.reason == "token_revoked"
    # Once the cache no longer knows the token (flushed: the bus was lost), a repeat is left to
    # decide_now and the store read, and its hit is counted once, there.
    revocation.bus_connected_changed(False)
    hits = core.verifier.cache_hits
    assert repeat(core, token, memo) is None and core.verifier.cache_hits == hits
    again = check(token, memo)
    assert core.authorizer.decide_now(again) is None
    assert (await core.authorizer.decide(again)).reason == "token_revoked"
    assert core.verifier.cache_hits == hits + 1
