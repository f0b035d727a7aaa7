"""The recorded check cases of tests/fixtures/check_cases.yaml, with their tokens filled in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.tokens import SigningKey

CASES_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "check_cases.yaml"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, list[str]]
    expect: dict[str, Any]
    envoy: dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tokens_for(key: SigningKey) -> dict[str, str]:
    now = int(time.time())
    header = {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    claims = {"iss": "https://issuer.test", "aud": "doma-api", "sub": "mallory", "exp": now + 3600}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    hs256 = hmac.new(key.public_pem, signing_input.encode(), hashlib.sha256).digest()
    none_header = _b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
    good = key.token(sub="alice", exp=now + 3600)
    return {
        "token": good,
        "expired": key.token(exp=now - 3600, iat=now - 7200),
        "future": key.token(nbf=now + 3600),
        "foreign_aud": key.token(aud="someone-else"),
        "foreign_iss": key.token(iss="https://evil.test"),
        "bad_signature": good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB"),
        "unknown_kid": SigningKey().token(),
        "hs256_public": f"{signing_input}.{_b64(hs256)}",
        "alg_none": f"{none_header}.{good.split('.')[1]}.",
        "oversized": "a" * 9000 + "." + "b" * 10 + "." + "c" * 10,
        "unicode_sub": key.token(sub="사용자-1"),
        "spaced_sub": key.token(sub=" alice"),
        "control_sub": key.token(sub="ali\x01ce"),
        # A number past a double's range and a lone surrogate: signed, but no Struct holds them.
        "unrepresentable_claims": key.token(sub="alice", n=10**400, nick="\ud800"),
    }


def load_cases(key: SigningKey) -> list[Case]:
    tokens = tokens_for(key)
    cases = []
    for entry in yaml.safe_load(CASES_FILE.read_text(encoding="utf-8")):
        headers: dict[str, list[str]] = {}
        for name, value in (entry.get("headers") or {}).items():
            values = value if isinstance(value, list) else [value]
            headers[name] = [v.format(**tokens) for v in values]
        expect = entry["expect"]
        cases.append(
            Case(
                entry["name"],
                entry.get("method", "GET"),
                entry["path"],
                headers,
                expect,
                entry.get("envoy", expect),
            )
        )
    return cases


def case_ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]
