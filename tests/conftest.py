"""Shared fixtures: each family lives in its own module under ``tests/fixtures``."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
    "tests.fixtures.secure_kafka",
]
