"""Shared fixtures: each family lives in its own module under ``tests/fixtures``."""

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

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


@pytest.fixture(autouse=True)
def _logging_put_back(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A command run in-process (``main(["check"])``, say) configures logging for the whole
    process: structlog's processors and caching, a root handler on the test's captured stderr
    (closed after the test), the root and aiokafka levels. Left so, a later test in the same
    worker missed log lines in ``capture_logs`` (loggers cached on an older processors list)
    and logged to a closed file. So no logger is cached in a test, and what the test
    configured is put back after it."""
    saved = structlog.get_config()
    root, aiokafka = logging.getLogger(), logging.getLogger("aiokafka")
    handlers, levels = root.handlers[:], (root.level, aiokafka.level)
    configure = structlog.configure

    def configure_uncached(**settings: Any) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", configure_uncached)
    yield
    configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    aiokafka.setLevel(levels[1])
