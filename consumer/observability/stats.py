"""Running totals of what the consumer did, for progress lines, readiness and metrics.

A plain object the pipeline and the scheduler report into (they only know the observer
protocols); the run command reads the totals, and every report also feeds ``metrics``, the
Prometheus metrics that ``/metrics`` renders (see ``metrics.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consumer.errors import MemoryExhausted
from consumer.intake import BatchEffect
from consumer.observability.metrics import Metrics
from consumer.state.recovery import RestoreReport


@dataclass
class Stats:
    """Counters since start. ``circuit_open`` and ``restoring`` are current states."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    misrouted: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    request_seconds: float = 0.0
    restores: int = 0
    restored_jobs: int = 0
    restore_seconds: float = 0.0
    circuit_open: bool = False
    circuit_openings: int = 0
    restoring: bool = False
    synced_jobs: int = 0
    owned: set[int] = field(default_factory=set)
    metrics: Metrics = field(default_factory=Metrics, repr=False, compare=False)

    # PipelineObserver

    def batch_absorbed(self, effect: BatchEffect, records: int) -> None:
        self.events += records
        self.applied += effect.applied
        self.duplicates += effect.duplicates
        self.misrouted += effect.misrouted
        for failure in effect.failures:
            self.invalid[failure.reason.value] += 1
            self.metrics.events_invalid.labels(failure.reason.value).inc()
        self.metrics.events_consumed.inc(records)
        self.metrics.events_applied.inc(effect.applied)
        self.metrics.events_duplicate.inc(effect.duplicates)
        self.metrics.misrouted_keys.inc(effect.misrouted)

    def restored(self, report: RestoreReport) -> None:
        self.restores += 1
        self.restored_jobs += report.jobs
        self.restore_seconds += report.seconds
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

    # SchedulerObserver

    def circuit_changed(self, is_open: bool) -> None:
        opened = is_open and not self.circuit_open
        if opened:
            self.circuit_openings += 1
        self.circuit_open = is_open
        self.metrics.circuit_changed(is_open, opened=opened)
        # The circuit observer pauses every owned partition while open, resumes them on close.
        self.metrics.set_partitions_paused(len(self.owned) if is_open else 0)

    def request_finished(self, outcome: str, status: int | None, seconds: float) -> None:
        self.requests[outcome] += 1
        if status is not None:
            self.statuses[status] += 1
        self.request_seconds += seconds
        self.metrics.request_finished(outcome, status, seconds)

    def synced(self, latency_ms: int | None) -> None:
        """A success record was written; ``latency_ms`` is its event-to-sync latency."""
        self.synced_jobs += 1
        self.metrics.synced(latency_ms)
