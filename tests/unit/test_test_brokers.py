"""The test brokers of two pytest-xdist workers never share a port or a state directory:
the fault tests SIGSTOP and restart their worker's broker, which must not hang the other
worker's tests, and two brokers on one directory take each other's data and pid file."""

from __future__ import annotations

import pytest

from tests.fixtures.kafka import local_broker_env
from tests.fixtures.secure_kafka import secure_broker_port


def brokers_of(monkeypatch: pytest.MonkeyPatch, worker: str | None) -> tuple[dict[str, str], int]:
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return local_broker_env(), secure_broker_port()


class TestWorkerBrokers:
    def test_the_first_worker_and_a_run_without_xdist_use_the_documented_ports(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("BASICSYNC_TEST_KAFKA_PORT", "BASICSYNC_TEST_SECURE_KAFKA_PORT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("KAFKA_STATE_DIR", raising=False)
        monkeypatch.setenv("TMPDIR", "/tmp")
        expected = ({"KAFKA_PORT": "19092", "KAFKA_STATE_DIR": "/tmp/basicsync-kafka-19092"}, 19096)
        assert brokers_of(monkeypatch, None) == expected
        assert brokers_of(monkeypatch, "gw0") == expected

    @pytest.mark.parametrize("secure_port", [None, "20000"])
    @pytest.mark.parametrize("state_dir", [None, "/srv/kafka-test"])
    def test_two_workers_share_no_port_and_no_directory(
        self, monkeypatch: pytest.MonkeyPatch, secure_port: str | None, state_dir: str | None
    ) -> None:
        """Whatever the caller chose: ports, secured port, state directory."""
        monkeypatch.setenv("BASICSYNC_TEST_KAFKA_PORT", "30000")
        for name, value in (
            ("BASICSYNC_TEST_SECURE_KAFKA_PORT", secure_port),
            ("KAFKA_STATE_DIR", state_dir),
        ):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        (first, first_secure), (second, second_secure) = (
            brokers_of(monkeypatch, worker) for worker in ("gw0", "gw1")
        )
        assert first["KAFKA_STATE_DIR"] != second["KAFKA_STATE_DIR"]
        # a broker takes its port and the next (controller); a secured one its port to + 3
        taken = [
            set(range(int(first["KAFKA_PORT"]), int(first["KAFKA_PORT"]) + 2)),
            set(range(first_secure, first_secure + 4)),
            set(range(int(second["KAFKA_PORT"]), int(second["KAFKA_PORT"]) + 2)),
            set(range(second_secure, second_secure + 4)),
        ]
        assert sum(len(ports) for ports in taken) == len(set().union(*taken))
