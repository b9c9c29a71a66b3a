"""The SASL password read again from its file and handed to live aiokafka clients (no I/O:
the clients are made, never started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr
from structlog.testing import capture_logs

from consumer.kafka.sasl_password import SaslPasswordWatch, tracked
from consumer.secret_file import SecretFile

OLD, NEW = "old-scram-password", "rotated-scram-password"


def kafka_kwargs() -> dict[str, Any]:
    return {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "basicsync",
        "sasl_plain_password": OLD,
    }


def passwords_of(*clients: Any) -> list[str]:
    """What each client would authenticate its next connection with (aiokafka's attribute:
    if it is renamed, this fails and consumer.kafka.sasl_password must follow)."""
    inner = [getattr(c, "_client", None) or c.client for c in clients]
    return [client._sasl_plain_password for client in inner]


class TestSaslPasswordWatch:
    async def test_a_rotated_password_reaches_live_clients_and_new_ones(
        self, tmp_path: Path
    ) -> None:
        secret = tmp_path / "password"
        secret.write_text(OLD + "\n")
        kafka = kafka_kwargs()
        watch = SaslPasswordWatch(SecretFile("sasl_password", SecretStr(OLD), secret), kafka)
        consumer = watch.track(AIOKafkaConsumer(**kafka))
        producer = watch.track(AIOKafkaProducer(**kafka))
        admin = watch.track(AIOKafkaAdminClient(**kafka))
        try:
            assert not watch.check()
            secret.write_text(NEW + "\n")
            with capture_logs() as logs:
                assert watch.check()
                assert not watch.check()
            assert passwords_of(consumer, producer, admin) == [NEW] * 3
            assert kafka["sasl_plain_password"] == NEW
            assert [line["event"] for line in logs] == ["sasl_password_reloaded"]
            assert NEW not in repr(logs)
        finally:
            await consumer.stop()
            await producer.stop()
            await admin.close()

    async def test_a_file_gone_or_empty_keeps_the_password_read_last(self, tmp_path: Path) -> None:
        secret = tmp_path / "password"
        secret.write_text(NEW)
        kafka = kafka_kwargs()
        watch = SaslPasswordWatch(SecretFile("sasl_password", SecretStr(OLD), secret), kafka)
        consumer = watch.track(AIOKafkaConsumer(**kafka))
        try:
            assert watch.check()
            secret.write_text("")
            with capture_logs() as logs:
                assert not watch.check()
            secret.unlink()
            assert not watch.check()
            assert passwords_of(consumer) == [NEW]
            assert [line["event"] for line in logs] == ["sasl_password_file_unreadable"]
        finally:
            await consumer.stop()

    def test_without_a_watch_a_client_is_left_alone(self) -> None:
        marker = object()
        assert tracked(None, marker) is marker
