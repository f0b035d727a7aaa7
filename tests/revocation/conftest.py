"""Shared Redis and RabbitMQ for the revocation tests (see tests/support/services.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import shared_amqp_url, shared_redis_url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, private = shared_redis_url()
    yield url
    if private is not None:
        private.close()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url, private = shared_amqp_url()
    yield url
    if private is not None:
        private.close()
