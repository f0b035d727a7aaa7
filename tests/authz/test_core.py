"""Decisions of the core: identity headers, bypass rules and deny bodies."""

import json

import pytest

from authz.check import CheckInput
from authz.core import Authorizer
from tests.authz.helpers import build_core
from tests.support.tokens import SigningKey


def request(path="/api/v1/scan/x", token=None, **headers):
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return CheckInput("GET", path, headers)


async def test_allowed_request_sets_identity_and_removes_every_other_spelling():
    core = await build_core()
    decision = await core.authorizer.decide(request(token=core.key.token(sub="alice")))
    assert decision.allowed and decision.reason == "ok"
    assert decision.headers_to_set == (("x-user-id", "alice"),)
    # Never list a header that is set: Envoy applies removals after it sets headers.
    assert "x-user-id" not in decision.headers_to_remove
    assert set(decision.headers_to_remove) == {"x_user_id", "x-user-email", "x_user_email"}


async def test_claim_present_sets_its_header():
    core = await build_core()
    decision = await core.authorizer.decide(request(token=core.key.token(email="a@example.com")))
    assert ("x-user-email", "a@example.com") in decision.headers_to_set


async def test_bypass_removes_every_identity_header_and_needs_no_token():
    core = await build_core()
    decision = await core.authorizer.decide(
        request("/api/v1/scan/health", **{"x-user-id": "admin"})
    )
    assert decision.allowed and decision.reason == "bypass"
    assert set(decision.headers_to_remove) == {
        "x-user-id",
        "x_user_id",
        "x-user-email",
        "x_user_email",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/scan/x/../health",
        "/api/v1/scan/x/%2e%2e/health",
        "/api/v1//scan/health",
        "/api/v1/scan/health;x=1",
        "/api/v1/scan/health#x",
        "/api/v1/scan/x%2f..%2fhealth",
        "/api/v1/scan%5chealth",
        "/api/v1/scan/x?/api/v1/scan/health",
        "/api/v1/scan/%252e%252e/health",
        "/API/v1/scan/health",
    ],
)
async def test_ambiguous_or_imitating_paths_never_bypass(path):
    core = await build_core()
    decision = await core.authorizer.decide(request(path))
    assert not decision.allowed and decision.reason == "missing_token"


async def test_nul_in_path_is_a_bad_request():
    core = await build_core()
    decision = await core.authorizer.decide(request("/api/v1/scan/health%00"))
    assert (decision.status, decision.reason) == (400, "invalid_path")


async def test_denial_is_json_with_reason_and_bearer_challenge_without_the_token():
    core = await build_core()
    token = core.key.token(aud="elsewhere")
    decision = await core.authorizer.decide(request(token=token))
    assert decision.status == 401
    assert json.loads(decision.body) == {"error": "unauthorized", "reason": "invalid_audience"}
    assert (
        "www-authenticate",
        'Bearer realm="doma-gateway", error="invalid_token"',
    ) in decision.response_headers
    assert token.encode() not in decision.body
    assert all(token not in value for _, value in decision.response_headers)


async def test_claim_with_a_line_break_is_refused():
    core = await build_core()
    decision = await core.authorizer.decide(
        request(token=core.key.token(sub="alice\r\nx-admin: 1"))
    )
    assert (decision.status, decision.reason) == (401, "invalid_claim_value")


async def test_non_string_claims_become_header_values():
    core = await build_core(claims_to_headers=(("roles", "x-user-roles"), ("age", "x-age")))
    decision = await core.authorizer.decide(request(token=core.key.token(roles=["a", "b"], age=3)))
    assert dict(decision.headers_to_set) == {"x-user-roles": "a,b", "x-age": "3"}


async def test_repeated_token_reuses_one_decision_object():
    core = await build_core()
    token = core.key.token()
    first = await core.authorizer.decide(request(token=token))
    second = await core.authorizer.decide(request(token=token))
    assert first is second


async def test_decide_now_answers_without_io_exactly_as_decide_would():
    core = await build_core()
    token = core.key.token(sub="alice")
    checks = [
        request("/api/v1/scan/health"),
        request(),
        request(token="not-a-jwt"),
        request("/api/v1/scan/health%00"),
    ]
    for check in checks:
        assert core.authorizer.decide_now(check) is await core.authorizer.decide(check)
    # An unseen token signed with a loaded key is verified now, and cached.
    decided = core.authorizer.decide_now(request(token=token))
    assert decided is not None and decided.allowed
    assert await core.authorizer.decide(request(token=token)) is decided
    assert core.verifier.cache_misses == 1
    # A kid the key set does not hold may need a fetch: not decided now, and nothing fetched.
    stranger = SigningKey()
    fetches = core.fetcher.calls
    assert core.authorizer.decide_now(request(token=stranger.token())) is None
    assert core.fetcher.calls == fetches
    # A bad signature needs no I/O to refuse.
    forged = token[: token.rindex(".") + 1] + token[token.rindex(".") + 1 :][::-1]
    refused = core.authorizer.decide_now(request(token=forged))
    assert refused is not None and refused.reason in {"invalid_signature", "malformed_token"}


async def test_decide_now_defers_to_decide_when_revocation_is_not_cached():
    class UnknownRevocation:
        def check_cached(self, claims):
            return False, None

        async def check(self, claims):
            return "token_revoked"

    core = await build_core()
    authorizer = Authorizer(core.authorizer.settings, core.verifier, UnknownRevocation())
    token = core.key.token()
    await core.verifier.verify(token)
    assert authorizer.decide_now(request(token=token)) is None
    assert (await authorizer.decide(request(token=token))).reason == "token_revoked"


class _StoreOnlyRevocation:
    """A revocation check whose cache never knows: every token goes to the (fake) store."""

    def __init__(self) -> None:
        self.store_reads = 0

    def check_cached(self, claims):
        return False, None

    async def check(self, claims):
        self.store_reads += 1
        return None


@pytest.mark.parametrize("cache_size", [100, 0])
async def test_a_token_waiting_for_the_store_is_verified_and_counted_once(cache_size):
    core = await build_core(cache_size=cache_size)
    revocation = _StoreOnlyRevocation()
    authorizer = Authorizer(core.authorizer.settings, core.verifier, revocation)
    check = request(token=core.key.token())
    verifications = []
    real_verify = core.verifier.verify

    async def counted_verify(token):
        verifications.append(token)
        return await real_verify(token)

    core.verifier.verify = counted_verify  # type: ignore[method-assign]
    assert authorizer.decide_now(check) is None
    assert (await authorizer.decide(check)).allowed
    # decide() went on from decide_now's verification: one miss, no hit, no second verify.
    assert verifications == []
    assert (core.verifier.cache_misses, core.verifier.cache_hits) == (1, 0)
    assert revocation.store_reads == 1
    # The note is used once: deciding the same check again verifies the token again.
    assert (await authorizer.decide(check)).allowed
    assert len(verifications) == 1


async def test_a_note_left_by_one_core_is_not_taken_by_another():
    core = await build_core()
    other = await build_core()
    waiting = Authorizer(core.authorizer.settings, core.verifier, _StoreOnlyRevocation())
    check = request(token=core.key.token())
    assert waiting.decide_now(check) is None
    # Another core with other keys must verify for itself: core's key is unknown to it.
    decision = await other.authorizer.decide(check)
    assert not decision.allowed
    assert decision.reason == "unknown_key"
