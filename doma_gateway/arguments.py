"""Argument types for the command line: a bad number is a usage error naming the option, never a
server that spins (``--watch-interval 0``) or a negative wait."""

from __future__ import annotations

import argparse
import math
import re

from authz.inter_domain_loader import TRUST_DOMAIN

__all__ = [
    "at_least_one",
    "kubernetes_namespace",
    "non_negative_seconds",
    "positive_seconds",
    "trust_domain",
]

# A DNS-1123 label, what Kubernetes accepts as a namespace name.
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _seconds(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text}")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def trust_domain(text: str) -> str:
    """A SPIFFE trust domain (``cluster.local``): it goes into every exported principal."""
    if not TRUST_DOMAIN.match(text):
        raise argparse.ArgumentTypeError(
            f"expected a SPIFFE trust domain like cluster.local, got {text!r}"
        )
    return text


def kubernetes_namespace(text: str) -> str:
    if not _NAMESPACE.match(text):
        raise argparse.ArgumentTypeError(
            f"expected a Kubernetes namespace (lower-case letters, digits and '-'), got {text!r}"
        )
    return text
