"""Prometheus metrics: what each observer call does to the consumer's registry, and the
health endpoints served without Kafka (a consumer that has not started yet)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from consumer import __version__
from consumer.app import Running
from consumer.certificate_dates import CertificateDates
from consumer.domain.results import FailureReason, FailureRecord, SourceInfo
from consumer.errors import TokenUnavailable
from consumer.intake import BatchEffect
from consumer.kafka.transactions import CommitTrouble
from consumer.observability.health import (
    LagView,
    PipelineView,
    SchedulerView,
    WatchedTokens,
    readiness,
    sample_metrics,
    serve_health,
)
from consumer.observability.metrics import Metrics
from consumer.observability.stats import Stats
from consumer.state.recovery import RestoreReport
from consumer.sync.circuit import CircuitState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def value(stats: Stats, name: str, **labels: str) -> float | None:
    return stats.metrics.registry.get_sample_value(name, labels)


def invalid(reason: FailureReason) -> FailureRecord:
    source = SourceInfo.from_message(
        topic="in", partition=0, offset=1, key=b"k", value=b"{", headers=()
    )
    return FailureRecord.for_input(reason=reason, message="bad", source=source, failed_at=NOW)


#: The level gauges of a member holding nothing.
_IDLE = {"dirty_jobs": 0, "in_flight": 0, "jobs": 0, "state_bytes": 0}


class TestFedByObserverCalls:
    def test_a_batch_counts_events_invalid_by_reason_and_misrouted_keys(self) -> None:
        """batch_absorbed feeds consumed, applied, duplicate, invalid{reason} and misrouted."""
        stats = Stats()
        effect = BatchEffect(
            failures=[
                invalid(FailureReason.invalid_event),
                invalid(FailureReason.invalid_event),
                invalid(FailureReason.key_mismatch),
            ],
            misrouted=2,
            applied=5,
            duplicates=1,
        )
        stats.batch_absorbed(effect, records=9)
        stats.batch_absorbed(BatchEffect(applied=1), records=1)
        assert value(stats, "basicsync_events_consumed_total") == 10
        assert value(stats, "basicsync_events_applied_total") == 6
        assert value(stats, "basicsync_events_duplicate_total") == 1
        assert value(stats, "basicsync_events_invalid_total", reason="invalid_event") == 2
        assert value(stats, "basicsync_events_invalid_total", reason="key_mismatch") == 1
        assert value(stats, "basicsync_misrouted_keys_total") == 2
        assert stats.events == 10  # the totals are read back from the metrics
        assert stats.invalid == {"invalid_event": 2, "key_mismatch": 1}

    def test_requests_count_by_outcome_and_status_with_latency_and_retries(self) -> None:
        """Each finished request is counted by outcome and status ("none" without a response),
        observed in the latency histogram, and a retryable one counts as a retry."""
        stats = Stats()
        stats.request_finished("accepted", 200, 0.02)
        stats.request_finished("accepted", 200, 0.03)
        stats.request_finished("retryable", 503, 0.5)
        stats.request_finished("retryable", None, 10.0)
        stats.request_finished("rejected", 422, 0.01)
        count = "basicsync_sync_requests_total"
        assert value(stats, count, outcome="accepted", status="200") == 2
        assert value(stats, count, outcome="retryable", status="503") == 1
        assert value(stats, count, outcome="retryable", status="none") == 1
        assert value(stats, count, outcome="rejected", status="422") == 1
        assert value(stats, "basicsync_sync_request_seconds_count") == 5
        assert value(stats, "basicsync_sync_request_seconds_sum") == pytest.approx(10.56)
        assert value(stats, "basicsync_sync_request_seconds_bucket", le="0.025") == 2
        assert value(stats, "basicsync_sync_retries_total") == 2
        assert stats.requests == {"accepted": 2, "retryable": 2, "rejected": 1}

    def test_success_latency_lands_in_the_event_to_sync_histogram(self) -> None:
        """synced(latency_ms) observes seconds; a success without a latency is not observed."""
        stats = Stats()
        stats.synced(1500)
        stats.synced(None)
        assert value(stats, "basicsync_event_to_sync_seconds_count") == 1
        assert value(stats, "basicsync_event_to_sync_seconds_sum") == 1.5
        assert value(stats, "basicsync_event_to_sync_seconds_bucket", le="1.0") == 0
        assert value(stats, "basicsync_event_to_sync_seconds_bucket", le="2.0") == 1

    def test_circuit_changes_set_the_state_gauge_and_count_openings(self) -> None:
        """The state gauge has one series per state, 1 for the current one; opening counts
        once however often it is reported, closing moves the 1 back to closed."""
        stats = Stats()

        def states() -> dict[str, float | None]:
            return {
                s.value: value(stats, "basicsync_circuit_state", state=s.value)
                for s in CircuitState
            }

        assert states() == {"closed": 1, "open": 0, "half_open": 0}
        stats.circuit_changed(True)
        stats.circuit_changed(True)
        assert states() == {"closed": 0, "open": 1, "half_open": 0}
        assert value(stats, "basicsync_circuit_openings_total") == 1
        stats.circuit_changed(False)
        assert states() == {"closed": 1, "open": 0, "half_open": 0}
        assert stats.circuit_openings == 1

    def test_paused_partitions_follow_the_circuit_and_ownership(self) -> None:
        """While the circuit is open every owned partition counts as paused, also partitions
        assigned meanwhile; closing the circuit brings the gauge back to 0."""
        stats = Stats()
        stats.ownership_changed({0, 1, 2}, restoring=False)
        assert value(stats, "basicsync_partitions_paused") == 0
        stats.circuit_changed(True)
        assert value(stats, "basicsync_partitions_paused") == 3
        stats.ownership_changed({0, 1, 2, 3}, restoring=True)
        assert value(stats, "basicsync_partitions_paused") == 4
        stats.circuit_changed(False)
        assert value(stats, "basicsync_partitions_paused") == 0
        stats.ownership_changed({0}, restoring=False)
        assert value(stats, "basicsync_partitions_paused") == 0

    def test_restores_record_their_time_and_jobs(self) -> None:
        """Each restore observes its duration and adds its jobs; ownership sets the gauges."""
        stats = Stats()
        stats.ownership_changed({0, 1}, restoring=True)
        assert value(stats, "basicsync_restoring") == 1
        stats.restored(
            RestoreReport((0, 1), jobs=40, records=90, skipped=0, seconds=0.4, end_offsets={})
        )
        stats.ownership_changed({0, 1}, restoring=False)
        assert value(stats, "basicsync_restore_seconds_count") == 1
        assert value(stats, "basicsync_restore_seconds_sum") == pytest.approx(0.4)
        assert value(stats, "basicsync_restored_jobs_total") == 40
        assert value(stats, "basicsync_restoring") == 0
        assert value(stats, "basicsync_partitions_owned") == 2
        assert (stats.restores, stats.restored_jobs) == (1, 40)


class TestSampledLevels:
    def test_sample_sets_levels_and_replaces_lag_per_partition(self) -> None:
        """Levels are set as sampled; a partition gone from the lag sample disappears."""
        metrics = Metrics()
        metrics.sample(
            dirty_jobs=7,
            in_flight=3,
            jobs=120,
            state_bytes=960_000,
            unreadable_jobs=2,
            circuit=CircuitState.HALF_OPEN,
            lag={("in", 0): 5, ("in", 1): 0},
            intent_stage_limit=96,
        )
        get = metrics.registry.get_sample_value
        assert get("basicsync_jobs_dirty") == 7
        assert get("basicsync_sync_in_flight") == 3
        assert get("basicsync_intent_stage_limit") == 96
        assert get("basicsync_state_jobs") == 120
        assert get("basicsync_state_bytes") == 960_000
        assert get("basicsync_state_jobs_unreadable") == 2
        assert get("basicsync_circuit_state", {"state": "half_open"}) == 1
        assert get("basicsync_circuit_state", {"state": "closed"}) == 0
        assert get("basicsync_consumer_lag", {"topic": "in", "partition": "0"}) == 5
        metrics.sample(
            dirty_jobs=0, in_flight=0, jobs=0, state_bytes=0, circuit=CircuitState.OPEN, lag={}
        )
        assert get("basicsync_consumer_lag", {"topic": "in", "partition": "0"}) is None
        assert get("basicsync_circuit_state", {"state": "open"}) == 1
        assert get("basicsync_circuit_state", {"state": "half_open"}) == 0

    def test_a_failed_lag_sample_keeps_the_previous_one(self) -> None:
        """lag=None (positions unavailable mid-rebalance) leaves the last lag values."""
        metrics = Metrics()
        metrics.sample(
            dirty_jobs=0,
            in_flight=0,
            jobs=0,
            state_bytes=0,
            circuit=CircuitState.CLOSED,
            lag={("in", 2): 9},
        )
        metrics.sample(
            dirty_jobs=0, in_flight=0, jobs=0, state_bytes=0, circuit=CircuitState.CLOSED, lag=None
        )
        get = metrics.registry.get_sample_value
        assert get("basicsync_consumer_lag", {"topic": "in", "partition": "2"}) == 9

    def test_each_consumer_has_its_own_registry(self) -> None:
        """Two consumers in one process keep separate numbers (no global registry clash)."""
        first, second = Stats(), Stats()
        first.batch_absorbed(BatchEffect(), records=3)
        assert value(first, "basicsync_events_consumed_total") == 3
        assert value(second, "basicsync_events_consumed_total") == 0

    def test_render_is_prometheus_text(self) -> None:
        """render() gives the text exposition with HELP and TYPE lines for the metrics."""
        text = Metrics().render().decode()
        assert "# TYPE basicsync_events_consumed_total counter" in text
        assert "# TYPE basicsync_sync_request_seconds histogram" in text
        assert "# TYPE basicsync_circuit_state gauge" in text


class TestStandardSeries:
    def test_counters_export_no_created_series(self) -> None:
        """No `*_created` timestamp series: they double the series count and nothing reads
        them."""
        metrics = Metrics()
        metrics.request_finished("accepted", 200, 0.1)
        assert "_created" not in metrics.render().decode()

    def test_process_and_python_series_are_in_each_registry(self) -> None:
        """Memory, CPU and interpreter series come with every consumer's registry (the
        process collector reads /proc, so this holds on Linux, where the image runs)."""
        first, second = Metrics(), Metrics()
        for metrics in (first, second):
            get = metrics.registry.get_sample_value
            resident = get("process_resident_memory_bytes")
            assert resident is not None
            assert resident > 0
            assert get("process_cpu_seconds_total") is not None
            assert "python_info{" in metrics.render().decode()

    def test_build_info_names_the_version(self) -> None:
        """basicsync_build_info{version} is 1 with the package's version."""
        get = Metrics().registry.get_sample_value
        assert get("basicsync_build_info", {"version": __version__}) == 1


class TestDocumented:
    def test_operations_guide_lists_exactly_the_metrics_of_the_registry(self) -> None:
        """docs/operations.md's metrics tables name every exported metric and no other,
        the process and Python series included, each with a unit column."""
        guide = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
        rows = re.findall(
            r"^\| `((?:basicsync|process|python)_[a-z_]+)` \| (\w+) \| ([^|]*) \|",
            guide,
            re.MULTILINE,
        )
        documented = {name: kind for name, kind, _ in rows}
        text = Metrics().render().decode()
        exported = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
        assert documented == exported
        assert all(unit.strip() for _, _, unit in rows), "every metric names its unit"


class _Tokens:
    """A token provider that fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False

    async def token(self) -> str:
        if self.failing:
            raise TokenUnavailable("token endpoint answered 503", status=503)
        return "t0ken"

    async def invalidate(self, token: str) -> None:
        return None


class TestWatchedTokens:
    async def test_remembers_the_outcome_of_the_last_token_request(self) -> None:
        """ok is None before any request, False after a failure, True after the next success."""
        inner = _Tokens()
        tokens = WatchedTokens(inner)
        assert tokens.ok is None
        inner.failing = True
        with pytest.raises(TokenUnavailable):
            await tokens.token()
        assert tokens.ok is False
        assert tokens.error is not None
        assert "503" in tokens.error
        inner.failing = False
        assert await tokens.token() == "t0ken"
        assert tokens.ok is True
        assert "t0ken" not in repr(tokens)


class TestReadiness:
    def test_a_consumer_not_yet_started_is_not_ready(self) -> None:
        """Without a pipeline the partitions check fails; circuit and token pass."""
        checks = readiness(Running(stats=Stats()), WatchedTokens(_Tokens()))
        assert not checks["partitions"].ok
        assert checks["circuit"].ok
        assert checks["token"].ok

    async def test_a_failed_token_request_fails_the_token_check(self) -> None:
        """The token check fails after the last token request failed."""
        inner = _Tokens()
        inner.failing = True
        tokens = WatchedTokens(inner)
        with pytest.raises(TokenUnavailable):
            await tokens.token()
        checks = readiness(Running(stats=Stats()), tokens)
        assert not checks["token"].ok


@dataclass
class _RestoredPipeline:
    """A pipeline owning partitions 0 and 1, restored, whose checkpoint may be in trouble."""

    trouble: CommitTrouble | None = None
    owned_partitions: set[int] = field(default_factory=lambda: {0, 1})
    ready: bool = True
    job_count: int = 3
    unreadable_job_count: int = 0
    unwritten_job_count: int = 0
    changelog_room: int | None = None
    stored_bytes: int = 300
    held: dict[tuple[str, int], float] = field(default_factory=dict)

    def stalled_for(self) -> float:
        return 0.0

    def held_by_transactions(self) -> dict[tuple[str, int], float]:
        return self.held

    def commit_trouble(self) -> CommitTrouble | None:
        return self.trouble


@dataclass
class _Observed:
    pipeline: PipelineView | None
    metrics: Metrics = field(default_factory=Metrics)
    waiting_for: str | None = None
    kafka_access: str | None = None
    kafka_unreachable: str | None = None
    scheduler: SchedulerView | None = None
    source: LagView | None = None
    client_certificates: dict[str, CertificateDates] = field(default_factory=dict)


class TestClientCertificateGauges:
    async def test_the_expiry_and_whether_the_renewal_is_overdue(self) -> None:
        now = datetime.now(UTC)
        fresh = CertificateDates(now - timedelta(days=1), now + timedelta(days=300))
        running = _Observed(pipeline=None, client_certificates={"kafka": fresh})
        await sample_metrics(running)
        registry, labels = running.metrics.registry, {"context": "kafka"}
        expiry = "basicsync_tls_client_certificate_expiry_timestamp_seconds"
        overdue = "basicsync_tls_client_certificate_renewal_overdue"
        assert registry.get_sample_value(expiry, labels) == fresh.not_after.timestamp()
        assert registry.get_sample_value(overdue, labels) == 0
        running.client_certificates["kafka"] = CertificateDates(fresh.not_before, now)
        await sample_metrics(running)
        assert registry.get_sample_value(expiry, labels) == now.timestamp()
        assert registry.get_sample_value(overdue, labels) == 1


class TestKafkaUnreachable:
    def test_an_unanswering_kafka_fails_the_kafka_check_with_its_cause(self) -> None:
        running = _Observed(pipeline=None, kafka_unreachable="Kafka b:9093 refused: ...")
        check = readiness(running, None)["kafka"]
        assert (check.ok, check.detail) == (False, "Kafka b:9093 refused: ...")
        assert readiness(_Observed(pipeline=None), None)["kafka"].ok

    async def test_the_gauge_follows_the_report(self) -> None:
        running = _Observed(pipeline=None, kafka_unreachable="gone")
        await sample_metrics(running)
        assert running.metrics.registry.get_sample_value("basicsync_kafka_unreachable") == 1
        running.kafka_unreachable = None
        await sample_metrics(running)
        assert running.metrics.registry.get_sample_value("basicsync_kafka_unreachable") == 0


class TestCheckpointTrouble:
    async def test_a_failing_checkpoint_fails_readiness_and_shows_in_the_gauge(self) -> None:
        """A partition whose commits fail is named on /readyz with its last error, and
        ``basicsync_checkpoint_failing_seconds`` says for how long; both clear with it."""
        failing = CommitTrouble(1, time.monotonic() - 30, 4, "NotEnoughReplicasError")
        pipeline = _RestoredPipeline(failing)
        running = _Observed(pipeline)
        checks = readiness(running, None)
        assert [name for name, check in checks.items() if not check.ok] == ["checkpoint"]
        assert checks["checkpoint"].detail.startswith("partition 1: commits failing for 30s")
        assert "NotEnoughReplicasError" in checks["checkpoint"].detail
        await sample_metrics(running)
        failing_s = running.metrics.registry.get_sample_value(
            "basicsync_checkpoint_failing_seconds"
        )
        assert failing_s is not None
        assert 30 <= failing_s < 40
        pipeline.trouble = None
        assert all(check.ok for check in readiness(running, None).values())
        await sample_metrics(running)
        assert (
            running.metrics.registry.get_sample_value("basicsync_checkpoint_failing_seconds") == 0
        )


class TestEndpoints:
    async def test_healthz_readyz_and_metrics_answer_on_a_free_port(self) -> None:
        """Port 0 binds a free port; /healthz is 200 with uptime, /readyz is 503 naming the
        failing check, /metrics is Prometheus text."""
        running = Running(stats=Stats())
        running.stats.batch_absorbed(BatchEffect(), records=4)
        async with (
            serve_health(running, None, host="127.0.0.1", port=0) as server,
            aiohttp.ClientSession() as http,
        ):
            assert server.port > 0
            base = f"http://127.0.0.1:{server.port}"
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
                health = await response.json()
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                ready = await response.json()
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
        assert health["status"] == "alive"
        assert health["uptime_s"] >= 0
        assert ready["failing"] == ["partitions"]
        assert ready["checks"]["partitions"] == {"ok": False, "detail": "starting"}
        assert "basicsync_events_consumed_total 4.0" in text


class TestChangelogRoomSampled:
    async def test_a_lowered_changelog_and_its_unwritten_jobs_are_levels(self) -> None:
        """``basicsync_changelog_room_bytes`` is what the changelog holds for a job (0 when it
        holds what max_job_bytes needs); ``basicsync_state_jobs_unwritten`` the jobs left as
        the changelog has them."""
        pipeline = _RestoredPipeline(changelog_room=12_000, unwritten_job_count=2)
        running = _Observed(pipeline)
        await sample_metrics(running)
        registry = running.metrics.registry
        assert registry.get_sample_value("basicsync_changelog_room_bytes") == 12_000
        assert registry.get_sample_value("basicsync_state_jobs_unwritten") == 2
        pipeline.changelog_room = None
        await sample_metrics(running)
        assert registry.get_sample_value("basicsync_changelog_room_bytes") == 0


class TestInputHeldSampled:
    async def test_a_partition_held_by_an_open_transaction_has_a_series_while_held(
        self,
    ) -> None:
        """``basicsync_input_held_seconds{topic, partition}`` per held input partition; a hold
        that ended leaves no series behind (an alert on ``> 300`` clears with it)."""
        pipeline = _RestoredPipeline(held={("jobs", 3): 75.04})
        running = _Observed(pipeline)
        await sample_metrics(running)
        registry = running.metrics.registry
        labels = {"topic": "jobs", "partition": "3"}
        assert registry.get_sample_value("basicsync_input_held_seconds", labels) == 75.0
        pipeline.held = {}
        await sample_metrics(running)
        assert registry.get_sample_value("basicsync_input_held_seconds", labels) is None
