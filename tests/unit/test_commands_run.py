"""``basicsync run`` never posts to a fake: without ``--embedded`` both endpoints are required."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.cli import build_parser
from consumer.commands.run import COLLECTOR_THRESHOLDS, missing_endpoints, tune_collector
from consumer.config import Settings

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = {
    "BASICSYNC_GATEWAY__BASE_URL": "http://127.0.0.1:9",
    "BASICSYNC_GATEWAY__TOKEN_URL": "http://127.0.0.1:9/connect/token",
    "BASICSYNC_GATEWAY__CLIENT_ID": "c",
    "BASICSYNC_GATEWAY__CLIENT_SECRET": "s",
}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASICSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer", "run", *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A socket a broker would listen on: it notices any connection attempt."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        yield server


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


class TestMissingEndpoints:
    def test_names_what_is_unset(self) -> None:
        """Each unset endpoint is named by its environment variable."""
        assert missing_endpoints(Settings()) == [
            "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS",
            "BASICSYNC_GATEWAY__BASE_URL",
        ]
        kafka_only = Settings(kafka={"bootstrap_servers": ["k:9092"]})
        assert missing_endpoints(kafka_only) == ["BASICSYNC_GATEWAY__BASE_URL"]

    def test_nothing_missing_when_both_set(self) -> None:
        """With Kafka and the gateway configured nothing is missing."""
        settings = Settings(
            kafka={"bootstrap_servers": ["k:9092"]},
            gateway={
                "base_url": "https://g",
                "token_url": "https://t",
                "client_id": "c",
                "client_secret": "s",
            },
        )
        assert missing_endpoints(settings) == []

    def test_embedded_flag_parses(self) -> None:
        """``--embedded`` is an option of run, off by default."""
        parser = build_parser("run")
        assert parser.parse_args(["run"]).embedded is False
        assert parser.parse_args(["run", "--embedded"]).embedded is True


class TestRefusal:
    def test_kafka_without_gateway_exits_2_before_connecting(self, listener: socket.socket) -> None:
        """Kafka set, gateway unset, no --embedded: exit 2 with one line naming the missing
        variable, and the broker never saw a connection."""
        port = listener.getsockname()[1]
        result = run_cli({"BASICSYNC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "BASICSYNC_GATEWAY__BASE_URL" in lines[0]
        assert "--embedded" in lines[0]
        assert "KAFKA" not in lines[0]
        assert not connected(listener)

    def test_nothing_set_exits_2_naming_both(self) -> None:
        """Nothing configured and no --embedded: no local broker, no sandbox, exit 2 naming
        both variables."""
        result = run_cli({})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS" in lines[0]
        assert "BASICSYNC_GATEWAY__BASE_URL" in lines[0]

    def test_gateway_without_kafka_exits_2(self) -> None:
        """Gateway set, Kafka unset, no --embedded: the local broker is not started."""
        result = run_cli(GATEWAY)
        assert result.returncode == 2
        assert "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS" in result.stderr
        assert "BASICSYNC_GATEWAY__BASE_URL" not in result.stderr


class TestMetricsPortTaken:
    def test_a_port_another_process_holds_exits_2_in_one_line(
        self, listener: socket.socket
    ) -> None:
        """``BASICSYNC_OBSERVABILITY__HTTP_PORT`` on a port already bound (a sidecar's):
        ``run`` stops at once, exit 2, with one line naming the variable and the port and no
        traceback, before it ever reaches Kafka."""
        with socket.socket() as kafka:
            kafka.bind(("127.0.0.1", 0))
            kafka.listen()
            kafka.setblocking(False)
            env = GATEWAY | {
                "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.getsockname()[1]}",
                "BASICSYNC_OBSERVABILITY__HTTP_PORT": str(listener.getsockname()[1]),
            }
            result = run_cli(env)
            assert not connected(kafka)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("basicsync:")]
        assert lines == [
            "basicsync: BASICSYNC_OBSERVABILITY__HTTP_PORT: cannot listen on "
            f"0.0.0.0:{listener.getsockname()[1]} for /metrics, /healthz and /readyz: "
            "Address already in use"
        ], result.stderr


class TestHangUp:
    def test_sighup_stops_a_run_cleanly(self, listener: socket.socket) -> None:
        """SIGHUP (a closed terminal, ``kill -HUP``) is a stop like SIGTERM: the run waiting
        for a broker that does not answer logs ``shutdown_requested`` and exits 0, where the
        default action would end it with -1 (SIGHUP) on the spot."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BASICSYNC_")}
        env = (
            clean
            | GATEWAY
            | {
                "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{listener.getsockname()[1]}",
                "BASICSYNC_OBSERVABILITY__LOG_FORMAT": "json",
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not connected(listener):  # the run has reached for Kafka: handlers are set
                assert time.monotonic() < deadline, "the run never reached for Kafka"
                time.sleep(0.05)
            process.send_signal(signal.SIGHUP)
            out, _ = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 0, out.decode()[-3000:]
        assert b'"shutdown_requested"' in out


class TestCollector:
    def test_the_run_collects_young_garbage_every_50000_allocations(self) -> None:
        before = gc.get_threshold()
        try:
            tune_collector()
            assert gc.get_threshold() == COLLECTOR_THRESHOLDS == (50_000, 20, 20)
        finally:
            gc.set_threshold(*before)
