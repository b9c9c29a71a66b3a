"""In-memory job state of the partitions this member owns.

The compacted changelog is the source of truth; this store is its cache, rebuilt from the
changelog when a partition is assigned and dropped when it is revoked. Each job lives in
the partition its events arrive on, which is also its changelog partition.

Forgotten jobs (``consumer.domain.retention.ForgottenJob`` markers) are kept apart from the
jobs: the scheduler and everything that walks the jobs never see them, and the intake asks
:meth:`JobStore.forgotten_marker` before it applies an event.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from consumer.domain.job import JobState
from consumer.domain.retention import ForgottenJob, StoredJob


class JobStore:
    """Job states by clientJobId, indexed by partition so a revoke drops a slice cheaply."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}
        self._partition_of: dict[str, int] = {}
        self._by_partition: dict[int, set[str]] = {}
        self._forgotten: dict[str, ForgottenJob] = {}
        self._forgotten_partition: dict[str, int] = {}
        self._forgotten_by_partition: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, client_job_id: str) -> JobState | None:
        return self._states.get(client_job_id)

    def partition_of(self, client_job_id: str) -> int | None:
        return self._partition_of.get(client_job_id)

    def put(self, partition: int, state: JobState) -> None:
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
        """Partitions holding a job or a forgotten-job marker."""
        return set(self._by_partition) | set(self._forgotten_by_partition)

    def drop_partition(self, partition: int) -> None:
        for job in self._by_partition.pop(partition, set()):
            self._states.pop(job, None)
            self._partition_of.pop(job, None)
        for job in self._forgotten_by_partition.pop(partition, set()):
            self._forgotten.pop(job, None)
            self._forgotten_partition.pop(job, None)

    def replace_partition(self, partition: int, stored: Mapping[str, StoredJob]) -> None:
        """The partition's content as restored: job states and forgotten-job markers."""
        self.drop_partition(partition)
        for value in stored.values():
            if isinstance(value, ForgottenJob):
                self.put_forgotten(partition, value)
            else:
                self.put(partition, value)

    def items(self) -> Iterator[tuple[int, JobState]]:
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
