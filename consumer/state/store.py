"""In-memory job state of the partitions this member owns.

The compacted changelog is the source of truth; this store is its cache, rebuilt from the
changelog when a partition is assigned and dropped when it is revoked. Each job lives in
the partition its events arrive on, which is also its changelog partition.

Forgotten jobs (``consumer.domain.retention.ForgottenJob`` markers) are kept apart from the
jobs: the scheduler and everything that walks the jobs never see them, and the intake asks
:meth:`JobStore.forgotten_marker` before it applies an event.

A settled job restored from the changelog, or a job that ended once the checkpoint committed
its settled state, is held as its value's bytes (a ``consumer.domain.settled.SettledJob``) until
:meth:`JobStore.get` first asks for it; most never are (they ended, and nothing posts them
again).

A job whose changelog value cannot be read (damaged, or written by a version that writes a form
this one does not read, before a roll back) is held apart as unreadable, not dropped: dropped,
its next event would start it afresh and post that stub over the whole document WorkfloPlus
holds, and the stub's state would overwrite the value a version that reads it could still use.
The intake asks :meth:`JobStore.unreadable` and refuses the job's events; nothing is written for
the job, so its value stays in the changelog as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import structlog

from consumer.domain.job import JobState
from consumer.domain.retention import ForgottenJob, StoredJob
from consumer.domain.settled import SettledJob
from consumer.domain.state_codec import decode_state

log = structlog.get_logger(__name__)


class JobStore:
    """Job states by clientJobId, indexed by partition so a revoke drops a slice cheaply."""

    def __init__(self) -> None:
        self._states: dict[str, JobState | SettledJob] = {}
        self._partition_of: dict[str, int] = {}
        self._by_partition: dict[int, set[str]] = {}
        self._forgotten: dict[str, ForgottenJob] = {}
        self._forgotten_partition: dict[str, int] = {}
        self._forgotten_by_partition: dict[int, set[str]] = {}
        #: jobs whose changelog value cannot be read: why, and where, by clientJobId
        self._unreadable: dict[str, tuple[int, str]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, client_job_id: str) -> JobState | None:
        held = self._states.get(client_job_id)
        if isinstance(held, SettledJob):
            return self._read(held)
        return held

    def held(self, client_job_id: str) -> JobState | SettledJob | None:
        """The job as held, a settled job not read yet as such (it is not read here)."""
        return self._states.get(client_job_id)

    def is_settled(self, client_job_id: str) -> bool:
        """Held as a settled job not read since: it needs no sync."""
        return type(self._states.get(client_job_id)) is SettledJob

    def unread_settled(self) -> int:
        """How many jobs are held as settled values not read yet (a walk of every job)."""
        return sum(type(held) is SettledJob for held in self._states.values())

    def _read(self, settled: SettledJob) -> JobState | None:
        """The state of a settled job, kept from now on; None (and the job held apart as
        unreadable, as a restore holds an unreadable value) when its value is not a job state."""
        job = settled.client_job_id
        try:
            state = decode_state(settled.value)
        except ValueError as exc:
            partition = self._partition_of[job]
            why = str(exc).splitlines()[0]
            log.error("changelog_record_unreadable", key=job, partition=partition, error=why)
            self.put_unreadable(partition, job, why)
            return None
        self._states[job] = state
        return state

    def partition_of(self, client_job_id: str) -> int | None:
        return self._partition_of.get(client_job_id)

    def put(self, partition: int, state: JobState | SettledJob) -> None:
        """Hold ``state``; a settled job's value is read back into a state when asked for."""
        self._hold(partition, state)

    def _hold(self, partition: int, state: JobState | SettledJob) -> None:
        job = state.client_job_id
        previous = self._partition_of.get(job)
        if previous is not None and previous != partition:
            # A misrouted key: keep the job where its state already lives.
            partition = previous
        self._states[job] = state
        self._partition_of[job] = partition
        self._by_partition.setdefault(partition, set()).add(job)

    def delete(self, client_job_id: str) -> None:
        self._states.pop(client_job_id, None)
        partition = self._partition_of.pop(client_job_id, None)
        if partition is not None:
            self._by_partition.get(partition, set()).discard(client_job_id)

    def jobs_in(self, partition: int) -> set[str]:
        return set(self._by_partition.get(partition, ()))

    def partitions(self) -> set[int]:
        """Partitions holding a job, a forgotten-job marker or an unreadable job."""
        unreadable = {partition for partition, _ in self._unreadable.values()}
        return set(self._by_partition) | set(self._forgotten_by_partition) | unreadable

    def drop_partition(self, partition: int) -> None:
        for job in self._by_partition.pop(partition, set()):
            self._states.pop(job, None)
            self._partition_of.pop(job, None)
        for job in self._forgotten_by_partition.pop(partition, set()):
            self._forgotten.pop(job, None)
            self._forgotten_partition.pop(job, None)
        for job in [j for j, (p, _) in self._unreadable.items() if p == partition]:
            del self._unreadable[job]

    def replace_partition(
        self,
        partition: int,
        stored: Mapping[str, StoredJob | SettledJob],
        unreadable: Mapping[str, str] | None = None,
    ) -> None:
        """The partition's content as restored: job states, settled jobs not read yet,
        forgotten-job markers, and the jobs whose values could not be read (with why)."""
        self.drop_partition(partition)
        for value in stored.values():
            if isinstance(value, ForgottenJob):
                self.put_forgotten(partition, value)
            else:
                self._hold(partition, value)
        for job, why in (unreadable or {}).items():
            self.put_unreadable(partition, job, why)

    def items(self) -> Iterator[tuple[int, JobState | SettledJob]]:
        """Every job as held: settled jobs not read yet stay so."""
        for job, state in self._states.items():
            yield self._partition_of[job], state

    # -- forgotten jobs --------------------------------------------------------------------------

    def forgotten_marker(self, client_job_id: str) -> ForgottenJob | None:
        return self._forgotten.get(client_job_id)

    def put_forgotten(self, partition: int, marker: ForgottenJob) -> None:
        """``marker`` replaces the job (if held): it is forgotten from now on."""
        job = marker.client_job_id
        self.delete(job)
        self._forgotten[job] = marker
        self._forgotten_partition[job] = partition
        self._forgotten_by_partition.setdefault(partition, set()).add(job)

    def delete_forgotten(self, client_job_id: str) -> None:
        self._forgotten.pop(client_job_id, None)
        partition = self._forgotten_partition.pop(client_job_id, None)
        if partition is not None:
            self._forgotten_by_partition.get(partition, set()).discard(client_job_id)

    def forgotten_items(self) -> Iterator[tuple[int, ForgottenJob]]:
        for job, marker in self._forgotten.items():
            yield self._forgotten_partition[job], marker

    # -- unreadable jobs -------------------------------------------------------------------------

    def unreadable(self, client_job_id: str) -> str | None:
        """Why the job's changelog value could not be read; None when it could (or is new)."""
        held = self._unreadable.get(client_job_id)
        return None if held is None else held[1]

    def put_unreadable(self, partition: int, client_job_id: str, why: str) -> None:
        """The job (if held) is replaced by the fact that its value cannot be read."""
        self.delete(client_job_id)
        self._unreadable[client_job_id] = (partition, why)

    def unreadable_count(self) -> int:
        return len(self._unreadable)
