"""In-memory job state of the partitions this member owns.

The compacted changelog is the source of truth; this store is its cache, rebuilt from the
changelog when a partition is assigned and dropped when it is revoked. Each job lives in
the partition its events arrive on, which is also its changelog partition.
"""

from __future__ import annotations

from collections.abc import Iterator

from consumer.domain.job import JobState


class JobStore:
    """Job states by clientJobId, indexed by partition so a revoke drops a slice cheaply."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}
        self._partition_of: dict[str, int] = {}
        self._by_partition: dict[int, set[str]] = {}

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
        return set(self._by_partition)

    def drop_partition(self, partition: int) -> None:
        for job in self._by_partition.pop(partition, set()):
            self._states.pop(job, None)
            self._partition_of.pop(job, None)

    def replace_partition(self, partition: int, states: dict[str, JobState]) -> None:
        self.drop_partition(partition)
        for state in states.values():
            self.put(partition, state)

    def items(self) -> Iterator[tuple[int, JobState]]:
        for job, state in self._states.items():
            yield self._partition_of[job], state
