"""The consumer's observer: what the pipeline and the scheduler report goes into the Prometheus
metrics (``metrics.py``), and the few totals a progress line or a test reads come back out of
them, so each count lives once.

The pipeline and the scheduler only know their observer protocols (``PipelineObserver``,
``SchedulerObserver``); ``Stats`` is both. Besides the counts it holds three current states the
metrics need to combine reports: whether the circuit is open, the owned partitions and whether
they are being restored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import Counter as PrometheusCounter

from consumer.errors import MemoryExhausted
from consumer.intake import BatchEffect
from consumer.observability.metrics import Metrics
from consumer.state.recovery import RestoreReport


@dataclass
class Stats:
    """Feeds ``metrics``; the totals below are read from it."""

    metrics: Metrics = field(default_factory=Metrics, repr=False, compare=False)
    circuit_open: bool = False
    restoring: bool = False
    owned: set[int] = field(default_factory=set)

    # -- read back from the metrics ----------------------------------------------------------

    @property
    def events(self) -> int:
        """Input records fetched and processed."""
        return self._total("basicsync_events_consumed_total")

    @property
    def requests(self) -> Counter[str]:
        """basicSync requests by outcome (``accepted``, ``rejected``, ``retryable``, ...)."""
        return _by_label(self.metrics.sync_requests, "outcome")

    @property
    def invalid(self) -> Counter[str]:
        """Unusable input records by failure reason."""
        return _by_label(self.metrics.events_invalid, "reason")

    @property
    def circuit_openings(self) -> int:
        return self._total("basicsync_circuit_openings_total")

    @property
    def restores(self) -> int:
        return self._total("basicsync_restore_seconds_count")

    @property
    def restored_jobs(self) -> int:
        return self._total("basicsync_restored_jobs_total")

    def _total(self, sample: str) -> int:
        return int(self.metrics.registry.get_sample_value(sample) or 0)

    # -- PipelineObserver --------------------------------------------------------------------

    def batch_absorbed(self, effect: BatchEffect, records: int) -> None:
        for failure in effect.failures:
            self.metrics.events_invalid.labels(failure.reason.value).inc()
        self.metrics.events_consumed.inc(records)
        self.metrics.events_applied.inc(effect.applied)
        self.metrics.events_duplicate.inc(effect.duplicates)
        self.metrics.misrouted_keys.inc(effect.misrouted)

    def input_records_lost(self, topic: str, records: int) -> None:
        """Records of ``topic`` deleted before they were read (``EventSource``)."""
        self.metrics.input_records_lost.labels(topic).inc(records)

    def restored(self, report: RestoreReport) -> None:
        self.metrics.restore_seconds.observe(report.seconds)
        self.metrics.restored_jobs.inc(report.jobs)

    def restore_refused(self, error: MemoryExhausted) -> None:
        self.metrics.restore_refusals.inc()

    def ownership_changed(self, partitions: set[int], restoring: bool) -> None:
        self.restoring = restoring
        self.owned = set(partitions)
        self.metrics.restoring.set(1 if restoring else 0)
        self.metrics.partitions_owned.set(len(partitions))
        if self.circuit_open:
            self.metrics.set_partitions_paused(len(partitions))

    # -- SchedulerObserver -------------------------------------------------------------------

    def circuit_changed(self, is_open: bool) -> None:
        opened = is_open and not self.circuit_open
        self.circuit_open = is_open
        self.metrics.circuit_changed(is_open, opened=opened)
        # The circuit observer pauses every owned partition while open, resumes them on close.
        self.metrics.set_partitions_paused(len(self.owned) if is_open else 0)

    def intent_committed(self, seconds: float) -> None:
        self.metrics.intent_commit_seconds.observe(seconds)

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self.metrics.request_finished(outcome, status, seconds)

    def synced(self, latency_ms: int | None) -> None:
        """A success record was written; ``latency_ms`` is its event-to-sync latency."""
        self.metrics.synced(latency_ms)


def _by_label(counter: PrometheusCounter, label: str) -> Counter[str]:
    """A labelled Prometheus counter's totals per value of ``label``."""
    totals: Counter[str] = Counter()
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.labels[label]] += int(sample.value)
    return totals
