"""Kafka gone under a running member: when it is reported, once, and when it is back."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError
from structlog.testing import capture_logs

from consumer.kafka.reachability import KafkaProbe, Reachability, watching_kafka


class TestReachability:
    def test_reported_once_after_the_limit_and_cleared_by_an_answer(self) -> None:
        state = Reachability(unreachable_after_s=30)
        assert not state.failed(100.0, 100.0)
        assert not state.failed(129.9, 129.9)
        assert state.failed(130.0, 130.0)
        assert not state.failed(200.0, 200.0)  # once per outage
        assert state.answered(205.0) == 105.0
        assert not state.failed(300.0, 300.0)  # a new outage counts from its own start
        assert state.failed(331.0, 331.0)

    def test_a_hung_ask_counts_from_when_it_was_made(self) -> None:
        """A broker that hangs fails an ask only at its 10 s timeout: unanswered since the ask
        began, so a 3 s limit is past at once (before, the limit started at the timeout and
        the report came a whole interval and timeout later)."""
        state = Reachability(unreachable_after_s=3)
        assert state.failed(100.0, 110.0)
        assert state.failing_since == 100.0
        assert state.answered(126.0) == 26.0

    def test_a_blip_shorter_than_the_limit_is_never_reported(self) -> None:
        state = Reachability(unreachable_after_s=30)
        assert not state.failed(100.0, 100.0)
        assert state.answered(110.0) is None
        assert not state.failed(125.0, 125.0)  # counted afresh, not from 100


class FlakyKafka:
    """Answers, then does not, then answers again, as the test says."""

    def __init__(self) -> None:
        self.up = True
        self.asks = 0
        self.reports: list[str | None] = []

    async def ask(self) -> object:
        self.asks += 1
        if not self.up:
            raise KafkaConnectionError("Connection at 127.0.0.1:9092 closed")
        return {}

    async def cause(self, exc: BaseException) -> str:
        return f"cause of {type(exc).__name__}"

    def report(self, cause: str | None) -> None:
        self.reports.append(cause)


class TestWatch:
    async def test_an_outage_is_reported_with_its_cause_then_its_end(self) -> None:
        kafka = FlakyKafka()
        probe = KafkaProbe(kafka.ask, kafka.cause, kafka.report)
        with capture_logs() as logs:
            async with watching_kafka(probe, unreachable_after_s=0.1, interval_s=0.02):
                await asyncio.sleep(0.1)
                kafka.up = False
                await asyncio.sleep(0.4)
                kafka.up = True
                await asyncio.sleep(0.1)
        assert kafka.reports == ["cause of KafkaConnectionError", None]
        events = [line["event"] for line in logs]
        assert events == ["kafka_unreachable", "kafka_reachable_again"]
        assert logs[0]["cause"] == "cause of KafkaConnectionError"
        assert logs[0]["log_level"] == "error"
        assert logs[0]["unanswered_s"] >= 0.1
        assert kafka.asks > 10

    async def test_an_ask_that_hangs_counts_as_unanswered(self) -> None:
        """A broker that accepts and never answers: the ask's own timeout ends it."""
        reports: list[str | None] = []

        async def hang() -> object:
            await asyncio.sleep(3600)
            return None

        async def cause(exc: BaseException) -> str:
            return type(exc).__name__

        probe = KafkaProbe(hang, cause, reports.append)
        async with watching_kafka(probe, 0.1, interval_s=0.01, ask_timeout_s=0.05):
            await asyncio.sleep(0.5)
        assert reports == ["TimeoutError", None]  # withdrawn when the block ends

    async def test_a_report_is_withdrawn_when_the_run_ends_and_a_failing_diagnosis_is_no_crash(
        self,
    ) -> None:
        """The run ends while Kafka is still gone (a stop, a restart of the run): what it
        reported no longer holds, so readiness is not left failing on a stale cause. A
        diagnosis that fails itself still gets the outage reported."""
        kafka = FlakyKafka()
        kafka.up = False

        async def broken_cause(exc: BaseException) -> str:
            raise RuntimeError("diagnosis broke")

        probe = KafkaProbe(kafka.ask, broken_cause, kafka.report)
        with capture_logs() as logs:
            async with watching_kafka(probe, unreachable_after_s=0.05, interval_s=0.01):
                await asyncio.sleep(0.2)
        assert kafka.reports == [
            "KafkaConnectionError: KafkaConnectionError: Connection at 127.0.0.1:9092 closed "
            "(the diagnosis failed: RuntimeError)",
            None,
        ]
        assert [line["event"] for line in logs] == ["kafka_unreachable"]
