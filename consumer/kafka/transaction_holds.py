"""Input partitions an open transaction holds: nothing past its first record can be read.

This member reads its inputs ``read_committed``: the events of a transaction its producer
aborted must never be applied. The price is Kafka's: a read_committed reader gets nothing of a
partition past its last stable offset (LSO), the first record of the oldest transaction still
open there, and that holds back every record written after it, by any producer. A producer
that hangs or dies mid-transaction holds the partition until the broker aborts the transaction
at the producer's ``transaction.timeout.ms`` (at most the broker's
``transaction.max.timeout.ms``, 15 minutes by default), or for good when the broker lost track
of it (a hanging transaction, KIP-664: ``kafka-transactions.sh find-hanging``, then ``abort``).
Meanwhile the member reads nothing there and the lag grows, which looks like the member's own
fault unless something says why.

Every fetch response carries each partition's LSO and high watermark. :class:`TransactionHolds`
follows them and says when records have waited past an LSO that did not move for
``warn_after_s`` (a transaction open that long), and when that hold ends. Pure, time passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: An input partition: (topic, partition).
Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Ends:
    """What the last fetch response said of a partition."""

    last_stable: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class HoldReport:
    """A hold worth a log line: ``ended`` False when it passed the warning age, True when the
    LSO moved (or nothing waits past it any more) after such a warning."""

    partition: Partition
    last_stable: int
    records_waiting: int
    held_s: float
    ended: bool


@dataclass(slots=True)
class _Hold:
    last_stable: int
    since: float
    waiting: int
    reported: bool = False


class TransactionHolds:
    """The partitions whose LSO has held records back, and since when."""

    def __init__(self, warn_after_s: float) -> None:
        self.warn_after_s = warn_after_s
        self._holds: dict[Partition, _Hold] = {}

    def observe(self, ends: Mapping[Partition, Ends], now: float) -> list[HoldReport]:
        """The reports due after a reading of ``ends`` (partitions absent from it are not
        known now: paused, or not fetched yet; their holds are kept as they are)."""
        reports: list[HoldReport] = []
        for partition, end in ends.items():
            hold = self._holds.get(partition)
            waiting = end.high_watermark - end.last_stable
            if hold is not None and (waiting <= 0 or end.last_stable != hold.last_stable):
                del self._holds[partition]
                if hold.reported:
                    reports.append(self._report(partition, hold, now, ended=True))
                hold = None
            if waiting <= 0:
                continue
            if hold is None:
                hold = self._holds[partition] = _Hold(end.last_stable, now, waiting)
            hold.waiting = waiting
            if not hold.reported and now - hold.since >= self.warn_after_s:
                hold.reported = True
                reports.append(self._report(partition, hold, now, ended=False))
        return reports

    def forget(self, numbers: set[int]) -> None:
        """Partition numbers this member no longer reads (revoked), of every input topic:
        their holds are another member's to report."""
        for partition in [p for p in self._holds if p[1] in numbers]:
            del self._holds[partition]

    def keep(self, numbers: set[int]) -> None:
        """The partition numbers this member reads now (an assignment): the others' holds,
        of partitions lost without a revoke, are dropped."""
        self.forget({p[1] for p in self._holds} - numbers)

    def held_for(self, now: float) -> dict[Partition, float]:
        """Seconds each held partition's LSO has held records back (for the metric)."""
        return {partition: now - hold.since for partition, hold in self._holds.items()}

    @staticmethod
    def _report(partition: Partition, hold: _Hold, now: float, *, ended: bool) -> HoldReport:
        return HoldReport(partition, hold.last_stable, hold.waiting, now - hold.since, ended)
