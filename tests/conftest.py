"""Shared fixtures: where the real Kafka is, and unique names so tests never collide on a shared broker.

Integration tests *fail* (they do not skip) when RINGFENCE_KAFKA_BOOTSTRAP is unset: a skipped broker
test hides a gap, and `make test` always provides a broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from subprocess import Popen

import pytest
from enforcement_support import reap

from schemas.topics import KafkaSettings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the real Kafka the integration tests use."""
    value = os.environ.get("RINGFENCE_KAFKA_BOOTSTRAP", "").strip()
    if not value:
        pytest.fail(
            "RINGFENCE_KAFKA_BOOTSTRAP is not set: integration tests need a real Kafka. "
            "Run `make test` (it starts one), or `ringfence kafka up` and "
            "`export RINGFENCE_KAFKA_BOOTSTRAP=127.0.0.1:9092`.",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """KafkaSettings from the environment (TLS/SASL included), pointed at the test cluster."""
    return KafkaSettings().model_copy(update={"bootstrap": kafka_bootstrap})


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """`unique_name("events")` -> `"events-1a2b3c4d"`: topic and group names no other test uses."""

    def make(base: str) -> str:
        return f"{base}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def procs() -> Iterator[list[Popen[bytes]]]:
    """Processes a test started (append them), reaped after it whatever happened."""
    spawned: list[Popen[bytes]] = []
    yield spawned
    reap(*spawned)
