"""Prometheus metrics of one consumer, in its own ``CollectorRegistry``.

Two kinds of numbers:

- *Events* (counters, histograms) are fed as they happen, by :class:`~.stats.Stats`, which the
  pipeline and the scheduler report into; the totals it shows are read back from here.
- *Levels* (dirty jobs, requests in flight, jobs in memory, circuit state, lag per partition)
  are sampled when ``/metrics`` is scraped (:meth:`Metrics.sample`), so nothing runs between
  scrapes and a gauge never shows a stale partition.

The registry is per consumer (not prometheus-client's global one), so several consumers in one
process (tests, the embedded demo) keep separate numbers. It also carries prometheus-client's
process, platform and GC collectors (``process_*``, ``python_*``: memory, CPU, open files), as
the global registry would, and ``basicsync_build_info{version}``. The service's own names start
with ``basicsync_``; docs/operations.md lists every metric with its unit.

Counters export no ``*_created`` series (:func:`prometheus_client.disable_created_metrics`):
the timestamps double the series count and no dashboard or alert reads them. The switch is
process-wide in prometheus-client, which is right for a process whose only registries are these.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from consumer import __version__
from consumer.certificate_dates import CertificateDates
from consumer.sync.circuit import CircuitState

# Request latency is dominated by the gateway (tens of ms to the request timeout); event-to-sync
# latency by the debounce and max_delay (hundreds of ms to minutes during an outage).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
_RESTORE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The consumer's Prometheus metrics; ``registry`` is what ``/metrics`` renders."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # long: one declaration per metric, read as the list docs/operations.md documents
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("basicsync_build", "The running version", registry=r).info({"version": __version__})
        self.events_consumed = Counter(
            "basicsync_events_consumed", "Input records fetched and processed", registry=r
        )
        self.events_applied = Counter(
            "basicsync_events_applied", "Events that changed a job's state", registry=r
        )
        self.events_duplicate = Counter(
            "basicsync_events_duplicate", "Events already applied (replays), ignored", registry=r
        )
        self.events_invalid = Counter(
            "basicsync_events_invalid",
            "Unusable input records sent to the failure topic, by failure reason",
            ["reason"],
            registry=r,
        )
        self.input_records_lost = Counter(
            "basicsync_input_records_lost",
            "Input records deleted (by retention or kafka-delete-records.sh) before the group "
            "read them, by topic",
            ["topic"],
            registry=r,
        )
        self.misrouted_keys = Counter(
            "basicsync_misrouted_keys",
            "Records whose key does not hash to the partition they arrived on (refused: misrouted)",
            registry=r,
        )
        self.sync_requests = Counter(
            "basicsync_sync_requests",
            "basicSync requests by outcome (accepted, rejected, retryable, systemic) and HTTP "
            'status ("none" without a response)',
            ["outcome", "status"],
            registry=r,
        )
        self.sync_request_seconds = Histogram(
            "basicsync_sync_request_seconds",
            "Duration of one basicSync request, token included",
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.intent_commit_seconds = Histogram(
            "basicsync_intent_commit_seconds",
            "From a due job's attempt starting to its intent being durable (the partition's "
            "transaction in progress, then its own): the wait before the request may leave",
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.event_to_sync_seconds = Histogram(
            "basicsync_event_to_sync_seconds",
            "From a job's first unsynced event to WorkfloPlus accepting it",
            buckets=_SYNC_BUCKETS,
            registry=r,
        )
        self.sync_retries = Counter(
            "basicsync_sync_retries",
            "Requests that ended retryably (timeout, connection error, 408, 429, 5xx); each is "
            "tried again, or becomes a retries_exhausted failure once the job's budget is spent",
            registry=r,
        )
        self.checkpoint_failing = Gauge(
            "basicsync_checkpoint_failing_seconds",
            "How long the longest-failing checkpoint of this member's partitions has been "
            "failing, or waiting past 10 s for an answer (0 while commits succeed): nothing of "
            "that partition is durable or posted meanwhile",
            registry=r,
        )
        self.kafka_unreachable = Gauge(
            "basicsync_kafka_unreachable",
            "1 while this running member reports Kafka unreachable (kafka_unreachable in the "
            "log, /readyz kafka, with the cause), else 0",
            registry=r,
        )
        self.client_certificate_expiry = Gauge(
            "basicsync_tls_client_certificate_expiry_timestamp_seconds",
            "When the client certificate this member presents expires (Unix time), by TLS "
            "context (kafka); read again at every TLS files check",
            ["context"],
            registry=r,
        )
        self.client_certificate_overdue = Gauge(
            "basicsync_tls_client_certificate_renewal_overdue",
            "1 while the client certificate in use has less than a tenth of its lifetime or "
            "7 days left, whichever is less (its renewal did not come), else 0",
            ["context"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "basicsync_circuit_state",
            "Gateway circuit: 1 for the current state (closed; open: partitions paused; "
            "half_open: probing), 0 for the others",
            ["state"],
            registry=r,
        )
        self.set_circuit(CircuitState.CLOSED)
        self.input_topics = Gauge(
            "basicsync_input_topics",
            "Input topics: state=read, those this member reads; state=refused, topics the "
            "input pattern matches that it does not read (their partition count is not the "
            "changelog's)",
            ["state"],
            registry=r,
        )
        self.partitions_paused = Gauge(
            "basicsync_partitions_paused",
            "Input partitions this member has paused because the gateway circuit is open",
            registry=r,
        )
        self.circuit_openings = Counter(
            "basicsync_circuit_openings", "Times the circuit opened", registry=r
        )
        self.jobs_dirty = Gauge(
            "basicsync_jobs_dirty", "Jobs waiting to be posted (or held)", registry=r
        )
        self.sync_in_flight = Gauge(
            "basicsync_sync_in_flight", "basicSync requests in flight", registry=r
        )
        self.intent_stage_limit = Gauge(
            "basicsync_intent_stage_limit",
            "Jobs allowed between their intent and their request (adapts between "
            "sync.concurrency and 16 times it)",
            registry=r,
        )
        self.state_jobs = Gauge(
            "basicsync_state_jobs", "Jobs held in memory (owned partitions' changelog)", registry=r
        )
        self.state_jobs_unwritten = Gauge(
            "basicsync_state_jobs_unwritten",
            "Jobs whose state the changelog refuses as too large and holds from before its "
            "max.message.bytes was lowered: left as it is there while no event changes them",
            registry=r,
        )
        self.changelog_room = Gauge(
            "basicsync_changelog_room_bytes",
            "What the changelog topic holds for one job's key and state, when less than "
            "kafka.max_job_bytes needs (0 otherwise): jobs past it get job_too_large",
            registry=r,
        )
        self.state_jobs_unreadable = Gauge(
            "basicsync_state_jobs_unreadable",
            "Jobs whose changelog value cannot be read, held apart: their events get "
            "job_state_unreadable (docs/operations.md Upgrading)",
            registry=r,
        )
        self.state_bytes = Gauge(
            "basicsync_state_bytes",
            "Bytes of the changelog values of the jobs held (memory is about 1.5x; "
            "docs/operations.md Memory)",
            registry=r,
        )
        self.memory_limit = Gauge(
            "basicsync_memory_limit_bytes",
            "Memory limit the restore guard checks against (0: none known)",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "basicsync_partitions_owned", "Input partition numbers this member owns", registry=r
        )
        self.restoring = Gauge(
            "basicsync_restoring", "1 while assigned partitions are being restored", registry=r
        )
        self.restore_seconds = Histogram(
            "basicsync_restore_seconds",
            "Duration of one changelog restore (all newly assigned partitions)",
            buckets=_RESTORE_BUCKETS,
            registry=r,
        )
        self.restore_refusals = Counter(
            "basicsync_restore_refusals",
            "Restores stopped because the state would outgrow the memory limit",
            registry=r,
        )
        self.restored_jobs = Counter(
            "basicsync_restored_jobs", "Jobs read back from the changelog by restores", registry=r
        )
        self.consumer_lag = Gauge(
            "basicsync_consumer_lag",
            "Records between this member's position and the high watermark, per input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.input_held = Gauge(
            "basicsync_input_held_seconds",
            "How long records have waited past an input partition's last stable offset that "
            "did not move (a producer's open transaction: nothing past it can be read); a "
            "partition has a series only while it is held",
            ["topic", "partition"],
            registry=r,
        )

    # -- fed as things happen ----------------------------------------------------------------

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self.sync_requests.labels(outcome, "none" if status is None else str(status)).inc()
        self.sync_request_seconds.observe(seconds)
        if outcome == "retryable":
            self.sync_retries.inc()

    def synced(self, latency_ms: int | None) -> None:
        if latency_ms is not None:
            self.event_to_sync_seconds.observe(max(latency_ms, 0) / 1000)

    def circuit_changed(self, is_open: bool, *, opened: bool) -> None:
        self.set_circuit(CircuitState.OPEN if is_open else CircuitState.CLOSED)
        if opened:
            self.circuit_openings.inc()

    def set_circuit(self, current: CircuitState) -> None:
        """One series per state: 1 for ``current``, 0 for the others (alert on
        ``basicsync_circuit_state{state="open"} == 1``)."""
        for state in CircuitState:
            self.circuit_state.labels(state.value).set(1 if state is current else 0)

    def set_input_topics(self, read: int, refused: int) -> None:
        self.input_topics.labels(state="read").set(read)
        self.input_topics.labels(state="refused").set(refused)

    def set_partitions_paused(self, partitions: int) -> None:
        """How many input partitions are paused for an outage (the circuit observer pauses
        every owned partition); 0 once they are resumed."""
        self.partitions_paused.set(partitions)

    # -- sampled at scrape time --------------------------------------------------------------

    def sample(
        self,
        *,
        dirty_jobs: int,
        in_flight: int,
        jobs: int,
        state_bytes: int,
        unreadable_jobs: int = 0,
        unwritten_jobs: int = 0,
        changelog_room: int = 0,
        circuit: CircuitState,
        lag: Mapping[tuple[str, int], int] | None,
        intent_stage_limit: int = 0,
        checkpoint_failing_s: float = 0.0,
        held: Mapping[tuple[str, int], float] | None = None,
        kafka_unreachable: bool = False,
        client_certificates: Mapping[str, CertificateDates] | None = None,
    ) -> None:
        """Set the level gauges; ``lag=None`` keeps the last lag sample (fetching it failed)."""
        self.checkpoint_failing.set(checkpoint_failing_s)
        self.kafka_unreachable.set(1 if kafka_unreachable else 0)
        now = datetime.now(UTC)
        for context, dates in (client_certificates or {}).items():
            self.client_certificate_expiry.labels(context).set(dates.not_after.timestamp())
            self.client_certificate_overdue.labels(context).set(dates.renewal_overdue(now))
        self.input_held.clear()
        for (topic, partition), seconds in (held or {}).items():
            self.input_held.labels(topic, str(partition)).set(round(seconds, 1))
        self.jobs_dirty.set(dirty_jobs)
        self.sync_in_flight.set(in_flight)
        self.intent_stage_limit.set(intent_stage_limit)
        self.state_jobs.set(jobs)
        self.state_jobs_unreadable.set(unreadable_jobs)
        self.state_jobs_unwritten.set(unwritten_jobs)
        self.changelog_room.set(changelog_room)
        self.state_bytes.set(state_bytes)
        self.set_circuit(circuit)
        if lag is not None:
            self.consumer_lag.clear()  # partitions revoked since the last scrape disappear
            for (topic, partition), records in lag.items():
                self.consumer_lag.labels(topic, str(partition)).set(records)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
