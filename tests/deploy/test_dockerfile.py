"""The Dockerfile: its shape, its build context, and its commands run against the package.

No container engine runs here, so the image's ENTRYPOINT, CMD and HEALTHCHECK are taken from the
Dockerfile and run, unchanged, in a replica of the final stage's file system and environment
(see ``tests/deploy/image.py``). hadolint lints the file in ``make check``.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.deploy.dockerfile import (
    copies_from_context,
    dockerignore,
    dockerignore_excludes,
    env_of,
    healthcheck,
    parse,
)
from tests.deploy.image import (
    ROOT,
    health,
    image_env,
    lay_out,
    require_free,
    run_container,
    wait_healthy,
)
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey

STAGES = parse(ROOT / "Dockerfile")
BUILD, FINAL = STAGES[0], STAGES[-1]
ENTRYPOINT = FINAL.last("ENTRYPOINT").exec_form()
CMD = FINAL.last("CMD").exec_form()
HEALTH_OPTIONS, HEALTHCHECK = healthcheck(FINAL)
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "cc ", "clang", "pip install", "apt-get")


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert match, value
    number, unit = float(match.group(1)), match.group(2)
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


def test_image_builds_in_two_stages_on_slim_python_311():
    assert len(STAGES) == 2 and BUILD.name == "build"
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    copied = [i.value for i in FINAL.all("COPY") if "--from=build" in i.value]
    assert copied == ["--from=build /opt/doma-gateway /opt/doma-gateway"]


def test_final_stage_has_no_build_tools_and_installs_nothing():
    for instruction in FINAL.all("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in instruction.value, f"line {instruction.line}: {tool!r}"
    run = " ".join(i.value for i in BUILD.all("RUN"))
    assert "pip uninstall --yes pip" in run, "the copied environment must not carry pip"


def test_build_stage_installs_the_package_with_the_constraints():
    installs = [i.value for i in BUILD.all("RUN") if "pip install" in i.value]
    assert len(installs) == 1
    install = installs[0]
    assert "-c constraints.txt" in install and "--only-binary=:all:" in install
    assert (["pyproject.toml", "constraints.txt", "README.md"], "./") in copies_from_context(BUILD)


def test_image_runs_as_a_numeric_non_root_user():
    user = FINAL.last("USER").value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000, "runAsNonRoot needs a numeric, non-zero uid"
    assert gid.isdigit() and int(gid) != 0
    assert FINAL.instructions.index(FINAL.last("USER")) > max(
        FINAL.instructions.index(i) for i in FINAL.all("RUN")
    ), "USER comes after the last RUN"


def test_one_image_for_both_commands_with_a_bounded_healthcheck():
    assert ENTRYPOINT == ["doma-gateway"]
    assert CMD[0] in ("serve", "authz")
    assert seconds(HEALTH_OPTIONS["timeout"]) < seconds(HEALTH_OPTIONS["interval"])
    assert "start-period" in HEALTH_OPTIONS and int(HEALTH_OPTIONS["retries"]) >= 1
    assert HEALTHCHECK[:3] == ["python", "-m", "doma_gateway.healthcheck"]
    env = env_of(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root file system must be enough"
    assert env["PATH"].startswith("/opt/doma-gateway/bin:")


def test_build_context_holds_what_the_dockerfile_copies_and_no_more():
    patterns = dockerignore(ROOT / ".dockerignore")
    for stage in STAGES:
        for sources, _ in copies_from_context(stage):
            for source in sources:
                assert not dockerignore_excludes(patterns, source), source
    for private in (".git", ".venv", "tests", "bench", ".ci", "authz/__pycache__/core.pyc"):
        assert dockerignore_excludes(patterns, private), private


def self_contained_routes(routes: Path) -> None:
    """An ``auth.yaml`` with a local public key, mounted over the image's example."""
    key = SigningKey()
    (routes / "issuer.pem").write_bytes(key.public_pem)
    (routes / "auth.yaml").write_text(
        "auth:\n"
        "  issuers:\n"
        f"    - issuer: {ISSUER}\n"
        f"      audiences: [{AUDIENCE}]\n"
        "      public_key_file: issuer.pem\n"
        "  claims_to_headers: {sub: x-user-id}\n"
        "  bypass: [/api/v1/*/health]\n"
    )


@pytest.mark.e2e
def test_default_command_serves_the_gateway_and_is_healthy_once_keys_load(tmp_path):
    require_free(8080, "0.0.0.0")
    require_free(9901)
    workdir = lay_out(FINAL, tmp_path / "etc" / "doma-gateway")
    env = image_env(FINAL)
    with run_container([*ENTRYPOINT, *CMD], workdir=workdir, env=env) as container:
        listening = container.event("listening")
        assert listening["http"] == "0.0.0.0:8080" and listening["admin"] == "127.0.0.1:9901"
        # The example's issuer publishes its keys inside a cluster: not ready until they load.
        unhealthy = health(HEALTHCHECK, env, workdir)
        assert unhealthy.returncode == 1 and "HTTP 503" in unhealthy.stdout
        container.process.send_signal(signal.SIGTERM)
        assert container.process.wait(15) == 0

    self_contained_routes(workdir / "routes")
    with run_container([*ENTRYPOINT, *CMD], workdir=workdir, env=env) as container:
        container.event("listening")
        healthy = wait_healthy(HEALTHCHECK, env, workdir)
        assert healthy.returncode == 0, healthy.stdout
        assert healthy.stdout.startswith("healthy: http://127.0.0.1:9901/readyz")
        container.process.send_signal(signal.SIGTERM)
        container.event("stopped")
        assert container.process.wait(15) == 0


@pytest.mark.e2e
def test_authz_command_of_the_image_is_healthy_over_grpc_health(tmp_path):
    require_free(9000, "0.0.0.0")
    require_free(9090)
    workdir = lay_out(FINAL, tmp_path / "etc" / "doma-gateway")
    self_contained_routes(workdir / "routes")
    env = image_env(FINAL)
    with run_container([*ENTRYPOINT, "authz"], workdir=workdir, env=env) as container:
        listening = container.event("listening")
        assert listening["grpc"] == "0.0.0.0:9000"
        healthy = wait_healthy(HEALTHCHECK, env, workdir)
        assert healthy.returncode == 0, healthy.stdout
        assert healthy.stdout.startswith("healthy: 127.0.0.1:9000")
        container.process.send_signal(signal.SIGTERM)
        container.event("stopped")
        assert container.process.wait(15) == 0
