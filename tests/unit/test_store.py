"""The in-memory job store (consumer.state.store): states by job, indexed by partition."""

from __future__ import annotations

from consumer.domain.retention import forget
from consumer.state.store import JobStore
from tests.unit.fakes import NOW, job_state


class TestJobStore:
    def test_put_then_get(self) -> None:
        """A stored state is returned by its clientJobId, with the partition it was put in."""
        store = JobStore()
        state = job_state("a")
        store.put(3, state)
        assert store.get("a") is state
        assert store.partition_of("a") == 3
        assert len(store) == 1

    def test_unknown_job(self) -> None:
        """An unknown job has neither state nor partition."""
        store = JobStore()
        assert store.get("nope") is None
        assert store.partition_of("nope") is None
        assert len(store) == 0

    def test_put_replaces_the_state(self) -> None:
        """A second put of the same job replaces its state without duplicating it."""
        store = JobStore()
        store.put(1, job_state("a", title="old"))
        newer = job_state("a", title="new")
        store.put(1, newer)
        assert store.get("a") is newer
        assert len(store) == 1
        assert store.jobs_in(1) == {"a"}

    def test_misrouted_put_keeps_the_original_partition(self) -> None:
        """A job put under another partition stays in the partition its state lives in."""
        store = JobStore()
        store.put(1, job_state("a"))
        store.put(2, job_state("a", title="moved?"))
        assert store.partition_of("a") == 1
        assert store.jobs_in(1) == {"a"}
        assert store.jobs_in(2) == set()

    def test_partition_index(self) -> None:
        """jobs_in and partitions reflect where each job was put."""
        store = JobStore()
        store.put(0, job_state("a"))
        store.put(0, job_state("b"))
        store.put(5, job_state("c"))
        assert store.jobs_in(0) == {"a", "b"}
        assert store.jobs_in(5) == {"c"}
        assert store.jobs_in(9) == set()
        assert store.partitions() == {0, 5}
        assert sorted((p, s.client_job_id) for p, s in store.items()) == [
            (0, "a"),
            (0, "b"),
            (5, "c"),
        ]

    def test_jobs_in_returns_a_copy(self) -> None:
        """Mutating the set jobs_in returned does not change the index."""
        store = JobStore()
        store.put(0, job_state("a"))
        store.jobs_in(0).clear()
        assert store.jobs_in(0) == {"a"}

    def test_delete(self) -> None:
        """delete forgets the state and removes the job from its partition; twice is harmless."""
        store = JobStore()
        store.put(0, job_state("a"))
        store.put(0, job_state("b"))
        store.delete("a")
        store.delete("a")
        assert store.get("a") is None
        assert store.partition_of("a") is None
        assert store.jobs_in(0) == {"b"}
        assert len(store) == 1

    def test_drop_partition(self) -> None:
        """drop_partition forgets every job of that partition and leaves the others alone."""
        store = JobStore()
        store.put(0, job_state("a"))
        store.put(1, job_state("b"))
        store.drop_partition(0)
        store.drop_partition(7)
        assert store.get("a") is None
        assert store.partition_of("a") is None
        assert store.get("b") is not None
        assert store.partitions() == {1}
        assert len(store) == 1

    def test_dropped_job_can_come_back_elsewhere(self) -> None:
        """After a drop, a job may be put in another partition (no stale index entry)."""
        store = JobStore()
        store.put(0, job_state("a"))
        store.drop_partition(0)
        store.put(4, job_state("a"))
        assert store.partition_of("a") == 4

    def test_replace_partition(self) -> None:
        """replace_partition swaps a partition's content for the restored states."""
        store = JobStore()
        store.put(0, job_state("old"))
        store.put(1, job_state("other"))
        restored = {"x": job_state("x"), "y": job_state("y")}
        store.replace_partition(0, restored)
        assert store.jobs_in(0) == {"x", "y"}
        assert store.get("old") is None
        assert store.get("x") is restored["x"]
        assert store.jobs_in(1) == {"other"}
        assert len(store) == 3


class TestForgottenMarkers:
    def test_markers_are_kept_apart_from_jobs(self) -> None:
        """A marker replaces its job: get/items/jobs_in/len no longer see it, forgotten_marker
        does, and partitions() still lists its partition; drop_partition removes it too."""
        store = JobStore()
        state = job_state("done", status="Completed")
        store.put(2, state)
        store.put(2, job_state("live"))
        marker = forget(state, NOW)
        store.put_forgotten(2, marker)
        assert store.get("done") is None
        assert store.jobs_in(2) == {"live"}
        assert len(store) == 1
        assert store.forgotten_marker("done") == marker
        assert list(store.forgotten_items()) == [(2, marker)]
        store.delete("live")
        assert store.partitions() == {2}
        store.drop_partition(2)
        assert store.forgotten_marker("done") is None
        assert store.partitions() == set()

    def test_replace_partition_routes_markers(self) -> None:
        """Restored values are routed by type: states to the jobs, markers apart."""
        store = JobStore()
        state = job_state("done", status="Completed")
        marker = forget(state, NOW)
        live = job_state("live")
        store.replace_partition(1, {"done": marker, "live": live})
        assert store.get("live") == live
        assert store.get("done") is None
        assert store.forgotten_marker("done") == marker
