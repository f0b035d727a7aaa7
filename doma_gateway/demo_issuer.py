"""The demos' token issuer: a fresh RSA key, its JWKS document, and tokens signed with it."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["AUDIENCE", "ISSUER", "DemoIssuer"]

ISSUER = "https://demo.doma-gateway.local"
AUDIENCE = "doma-demo"


class DemoIssuer:
    def __init__(self, kid: str = "demo-key-1"):
        self.kid = kid
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._private.public_key()))
        return json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    def token(self, **claims: Any) -> str:
        """A token for ``demo-user``, valid for an hour; ``claims`` override or add claims."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "demo-user",
            "iat": now,
            "exp": now + 3600,
        }
        payload.update(claims)
        return jwt.encode(payload, self._private, algorithm="RS256", headers={"kid": self.kid})
