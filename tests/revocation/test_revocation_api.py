"""The revocation API on the admin listener, its client and the ``doma-gateway revoke`` CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from redis import Redis

from authz.revocation_client import RevocationApiError, RevocationClient
from tests.revocation.helpers import Checker, admin_token, revocation_yaml, write_routes
from tests.support import processes
from tests.support.services import unique_prefix
from tests.support.tokens import SigningKey

pytestmark = pytest.mark.e2e

KEY = SigningKey()
ROOT = processes.ROOT


class Instance:
    def __init__(self, server: processes.ServerProcess, routes, prefix: str, redis_url: str):  # type: ignore[no-untyped-def]
        self.server = server
        self.routes = routes
        self.prefix = prefix
        self.admin = str(server.listening["admin"])
        self.checker = Checker(server.port("grpc"))
        self.redis = Redis.from_url(redis_url)

    def stored_keys(self) -> list[bytes]:
        return sorted(self.redis.scan_iter(match="{" + self.prefix + "}:*"))

    def epoch(self) -> int:
        return int(self.redis.get("{" + self.prefix + "}:epoch") or 0)


@pytest.fixture(scope="module")
def instance(tmp_path_factory, redis_url, amqp_url) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("api")
    prefix = unique_prefix("api")
    routes = write_routes(tmp, KEY, revocation_yaml(redis_url, amqp_url, prefix))
    server = processes.start(
        [
            "authz",
            "--routes",
            str(routes),
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--admin",
            "127.0.0.1:0",
        ]
    )
    instance = Instance(server, routes, prefix, redis_url)
    instance.checker.wait_serving()
    yield instance
    instance.checker.close()
    instance.redis.close()
    server.stop()
    assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def call(instance: Instance, token: str, method: str, *args, **kwargs):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        async with RevocationClient(instance.admin, token) as client:
            return await getattr(client, method)(*args, **kwargs)

    return asyncio.run(run())


def test_admin_listener_is_on_loopback(instance):
    assert instance.admin.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "UNAUTHENTICATED"),
        ("not-a-jwt", "UNAUTHENTICATED"),
        (SigningKey().token(scope="doma.revocation.admin"), "UNAUTHENTICATED"),  # foreign key
        (KEY.token(scope="read write"), "PERMISSION_DENIED"),
        (KEY.token(exp=int(time.time()) - 3600, scope="doma.revocation.admin"), "UNAUTHENTICATED"),
    ],
    ids=["none", "garbage", "unknown-key", "no-admin-scope", "expired"],
)
def test_the_api_refuses_calls_without_the_admin_credential(instance, token, code):
    epoch = instance.epoch()
    for method, args in (
        ("revoke_token", ("j-x", int(time.time()) + 60)),
        ("revoke_subject", ("alice",)),
    ):
        with pytest.raises(RevocationApiError) as refused:
            call(instance, token, method, *args)
        assert refused.value.code == code
        assert token not in refused.value.message or not token
    with pytest.raises(RevocationApiError):
        call(instance, token, "is_revoked", jti="j-x")
    assert instance.epoch() == epoch


def test_a_call_without_any_metadata_is_unauthenticated(instance):
    from authz.api.v1 import revocation_pb2, revocation_pb2_grpc

    with grpc.insecure_channel(instance.admin) as channel, pytest.raises(grpc.RpcError) as refused:
        revocation_pb2_grpc.RevocationStub(channel).Revoke(
            revocation_pb2.RevokeRequest(jti="j", exp=int(time.time()) + 60), timeout=5
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_revoke_and_ask(instance):
    admin = admin_token(KEY)
    token = KEY.token(sub="grace")
    assert instance.checker.check(token) == (200, "ok")
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    result = call(instance, admin, "revoke_token", claims["jti"], claims["exp"])
    assert result.published and result.epoch == instance.epoch()
    assert result.kept_until >= claims["exp"]
    assert call(instance, admin, "is_revoked", jti=claims["jti"]) is True
    assert call(instance, admin, "is_revoked", jti="never-revoked") is False
    assert instance.checker.check(token) == (401, "token_revoked")


@pytest.mark.parametrize(
    ("ahead", "kept_until"),
    [(2 * 365 * 86_400, None), (10**12, 253_402_300_799)],
    ids=["two-years", "ms-typo-by-the-issuer"],
)
def test_every_token_the_verifier_accepts_can_be_revoked_by_jti(instance, ahead, kept_until):
    exp = int(time.time()) + ahead
    token = KEY.token(sub="long-lived", exp=exp)
    assert instance.checker.check(token) == (200, "ok")
    import jwt

    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    result = call(instance, admin_token(KEY), "revoke_token", jti, exp)
    assert result.kept_until >= exp if kept_until is None else result.kept_until == kept_until
    assert instance.checker.check(token) == (401, "token_revoked")


@pytest.mark.parametrize("subject", ["사용자-1", "alice smith", "a{b}:c", "s" * 2000])
def test_any_subject_a_token_can_carry_can_be_logged_out(instance, subject):
    token = KEY.token(sub=subject, jti=f"{subject} #1")
    assert instance.checker.check(token) == (200, "ok")
    call(instance, admin_token(KEY), "revoke_subject", subject)
    assert instance.checker.check(token) == (401, "token_revoked")
    other = KEY.token(sub=subject + "-other")
    assert instance.checker.check(other) == (200, "ok")


@pytest.mark.parametrize(
    ("method", "args", "code", "message"),
    [
        (
            "revoke_token",
            ("old-jti", int(time.time()) - 3600),
            "FAILED_PRECONDITION",
            "already expired",
        ),
        ("revoke_token", ("unknown-jti", 0), "INVALID_ARGUMENT", "unknown jti"),
        ("revoke_token", ("", int(time.time()) + 60), "INVALID_ARGUMENT", "jti is required"),
        ("revoke_token", ("new\nline", int(time.time()) + 60), "INVALID_ARGUMENT", "control"),
        ("revoke_token", ("x" * 70_000, int(time.time()) + 60), "INVALID_ARGUMENT", "longer"),
        ("revoke_subject", ("",), "INVALID_ARGUMENT", "subject is required"),
        ("revoke_subject", ("bob", time.time() + 10**9), "INVALID_ARGUMENT", "further ahead"),
    ],
    ids=[
        "expired",
        "unknown-jti",
        "empty-jti",
        "bad-jti",
        "long-jti",
        "no-subject",
        "far-before",
    ],
)
def test_bad_revocations_get_clear_errors_and_store_nothing(instance, method, args, code, message):
    keys, epoch = instance.stored_keys(), instance.epoch()
    with pytest.raises(RevocationApiError) as refused:
        call(instance, admin_token(KEY), method, *args)
    assert refused.value.code == code and message in refused.value.message
    assert instance.stored_keys() == keys and instance.epoch() == epoch


def test_a_malformed_request_is_rejected_and_stores_nothing(instance):
    keys, epoch = instance.stored_keys(), instance.epoch()
    with grpc.insecure_channel(instance.admin) as channel:
        raw = channel.unary_unary("/doma.authz.v1.Revocation/Revoke")
        with pytest.raises(grpc.RpcError) as refused:
            # Field 1 (jti) declared 200 bytes long, 3 present: not a RevokeRequest.
            raw(
                b"\x0a\xc8\x01abc",
                metadata=(("authorization", f"Bearer {admin_token(KEY)}"),),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "malformed doma.authz.v1.RevokeRequest"
    assert instance.stored_keys() == keys and instance.epoch() == epoch


@pytest.mark.parametrize("method", ["Revoke", "RevokeSubject", "IsRevoked"])
def test_a_caller_without_credentials_is_refused_before_its_request_is_decoded(instance, method):
    # Malformed on purpose: were it decoded first, the answer would be INVALID_ARGUMENT and
    # would tell an anonymous caller how its bytes were parsed.
    with grpc.insecure_channel(instance.admin) as channel:
        raw = channel.unary_unary(f"/doma.authz.v1.Revocation/{method}")
        with pytest.raises(grpc.RpcError) as refused:
            raw(b"\x0a\xc8\x01abc", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as refused:
            raw(b"\x0a\xc8\x01abc", metadata=(("authorization", "Bearer x.y.z"),), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doma_gateway.cli", "revoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_cli_revokes_through_the_api_and_directly(instance, tmp_path):
    admin = admin_token(KEY)
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin)
    first, second = KEY.token(sub="heidi"), KEY.token(sub="ivan")
    assert instance.checker.check(first) == (200, "ok")
    import jwt

    claims = jwt.decode(first, options={"verify_signature": False})
    done = run_cli(
        "--jti",
        claims["jti"],
        "--exp",
        str(claims["exp"]),
        "--admin",
        instance.admin,
        "--token-file",
        str(token_file),
    )
    assert done.returncode == 0, done.stderr
    assert '"revoked": "jti"' in done.stdout
    assert instance.checker.check(first) == (401, "token_revoked")

    done = run_cli("--sub", "ivan", "--direct", "--routes", str(instance.routes))
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 3
    while instance.checker.check(second) != (401, "token_revoked"):
        assert time.monotonic() < deadline


def test_cli_errors_are_one_line_without_the_token(instance):
    admin = admin_token(KEY)
    done = run_cli("--jti", "j", "--admin", instance.admin, env={"DOMA_ADMIN_TOKEN": admin})
    assert done.returncode == 1 and "--exp" in done.stderr
    done = run_cli(
        "--jti", "j", "--exp", "1", "--admin", instance.admin, env={"DOMA_ADMIN_TOKEN": admin}
    )
    assert (
        done.returncode == 1
        and "FAILED_PRECONDITION" in done.stderr
        and "already expired" in done.stderr
    )
    assert admin not in done.stderr and "Traceback" not in done.stderr
    done = run_cli("--sub", "x", "--admin", instance.admin, env={"DOMA_ADMIN_TOKEN": ""})
    assert done.returncode == 1 and "admin token is required" in done.stderr
    for exp in ("100000000000000000000000", "-5", "0"):
        done = run_cli(
            "--jti", "j", "--exp", exp, "--admin", instance.admin, env={"DOMA_ADMIN_TOKEN": admin}
        )
        assert done.returncode == 1 and "is not a Unix time" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_refusal_quotes_a_long_jti_shortened_so_it_fits_the_answer(instance):
    admin = admin_token(KEY)
    done = run_cli(
        "--jti", "j" * 65_000, "--exp", "1", "--admin", instance.admin,
        env={"DOMA_ADMIN_TOKEN": admin},
    )  # fmt: skip
    assert done.returncode == 1 and "FAILED_PRECONDITION" in done.stderr, done.stderr
    assert "already expired" in done.stderr and len(done.stderr) < 1000


def test_a_taken_default_admin_port_costs_the_api_not_the_server(tmp_path, redis_url, amqp_url):
    import socket

    routes = write_routes(
        tmp_path, KEY, revocation_yaml(redis_url, amqp_url, unique_prefix("admin-port"))
    )
    holder = socket.socket()
    with contextlib.suppress(OSError):  # already taken by someone else: just as good
        holder.bind(("127.0.0.1", 9001))
        holder.listen()
    try:
        server = processes.start(
            ["authz", "--routes", str(routes), "--listen", "127.0.0.1:0", "--no-metrics"]
        )
        try:
            assert server.listening["admin"] is None
            checker = Checker(server.port("grpc"))
            checker.wait_serving()
            assert checker.check(KEY.token()) == (200, "ok")
            checker.close()
        finally:
            server.stop()
        assert "admin_unavailable" in server.stderr()

        # Asked for explicitly, a taken port is an error.
        taken = holder.getsockname()[1] if holder.getsockname()[1] else 9001
        done = processes.run(
            [
                "authz",
                "--routes",
                str(routes),
                "--listen",
                "127.0.0.1:0",
                "--no-metrics",
                "--admin",
                f"127.0.0.1:{taken}",
            ],
            timeout=30,
        )
        assert done.returncode == 1 and "cannot listen on 127.0.0.1:" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        holder.close()
