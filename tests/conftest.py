"""Shared fixtures: each family lives in its own module under ``tests/fixtures``."""

from collections.abc import Iterator

import pytest

from tests.integration.harness import asyncio_errors_logged, kill_leftover_consumers

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
    "tests.fixtures.secure_kafka",
]


@pytest.fixture(autouse=True)
def _no_consumer_outlives_its_test() -> Iterator[None]:
    yield
    kill_leftover_consumers()
    errors = asyncio_errors_logged()
    if errors:
        pytest.fail("asyncio logged errors in a consumer process:\n" + "\n".join(errors))
