"""Settled jobs held as their changelog value (consumer.domain.settled, consumer.state.store):
the mark the checkpoint writes, what a store does with it, what retention and the scheduler
decide without reading it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from consumer.domain.job import JobState
from consumer.domain.retention import Retention, retention_action
from consumer.domain.settled import SettledJob, settled_header, settled_job
from consumer.domain.state_codec import encode_state
from consumer.domain.value_compression import compressed
from consumer.state.store import JobStore
from tests.unit.fakes import NOW, job_state

DAY = timedelta(days=1)


def synced(state: JobState) -> JobState:
    return replace(state, synced_version=state.version, synced_sha256="0" * 64, job_id="wf-1")


def held(state: JobState) -> SettledJob:
    """``state`` as a restore holds it when the checkpoint marked it settled."""
    header = settled_header(state)
    assert header is not None
    return settled_job(state.client_job_id, encode_state(state), header)


class TestMark:
    def test_only_a_settled_state_without_a_request_in_doubt_is_marked(self) -> None:
        """Marked: WorkfloPlus holds its version and no request is in doubt. Not marked: a
        version not yet accepted, or a request whose outcome is unknown."""
        state = job_state("a")
        assert settled_header(state) is None
        assert settled_header(synced(state)) is not None
        assert settled_header(replace(synced(state), sending_since=NOW)) is None

    @pytest.mark.parametrize(("status", "terminal"), [("InProgress", False), ("Completed", True)])
    def test_the_mark_carries_what_retention_needs(self, status: str, terminal: bool) -> None:
        """The mark reads back as the state's updated_at and whether it is terminal."""
        state = synced(replace(job_state("a", status=status), updated_at=NOW))
        job = held(state)
        assert (job.client_job_id, job.updated_at, job.terminal) == ("a", NOW, terminal)

    @pytest.mark.parametrize("header", [b"", b"2026-01-01T00:00:00+00:00|Y", b"soon|T", b"\xff"])
    def test_a_mark_this_version_did_not_write_is_refused(self, header: bytes) -> None:
        with pytest.raises(ValueError):  # noqa: PT011  # any of them (UnicodeDecodeError is one)
            settled_job("a", b"{}", header)


class TestStore:
    def test_a_settled_job_is_read_once_on_first_use(self) -> None:
        """Held as bytes until get() asks; then as the state its value holds, kept."""
        state = synced(job_state("a"))
        store = JobStore()
        store.replace_partition(2, {"a": held(state)})
        assert store.is_settled("a")
        assert (len(store), store.jobs_in(2), store.partition_of("a")) == (1, {"a"}, 2)
        read = store.get("a")
        assert read == state
        assert not store.is_settled("a")
        assert store.get("a") is read
        assert store.held("a") is read

    def test_a_value_compressed_alone_is_held_compressed_and_read_on_first_use(self) -> None:
        """A restore holds a compressed settled value as it came (its frame, a fraction of
        the JSON); the state read from it on first use is the state written."""
        state = synced(job_state("a"))
        value = compressed(encode_state(state))
        store = JobStore()
        store.replace_partition(0, {"a": replace(held(state), value=value)})
        holding = store.held("a")
        assert isinstance(holding, SettledJob)
        assert holding.value is value
        assert store.get("a") == state

    def test_a_damaged_compressed_value_is_held_apart_as_unreadable_when_read(self) -> None:
        """A frame cut short is an unreadable value: held apart, as a restore holds one."""
        state = synced(job_state("bad"))
        cut = compressed(encode_state(state))[:-8]
        store = JobStore()
        store.replace_partition(0, {"bad": replace(held(state), value=cut)})
        assert store.unreadable("bad") is None
        assert store.get("bad") is None
        assert len(store) == 0
        assert "damaged zstd frame" in (store.unreadable("bad") or "")

    def test_an_unreadable_settled_value_is_held_apart_when_read(self) -> None:
        """A value that turns out to be no job state leaves the jobs (nothing walks it, posts
        it or writes it) but stays known as unreadable until its partition is dropped."""
        store = JobStore()
        store.replace_partition(0, {"bad": replace(held(synced(job_state("bad"))), value=b"{")})
        assert store.get("bad") is None
        assert (len(store), store.jobs_in(0), store.partition_of("bad")) == (0, set(), None)
        assert store.unreadable("bad") is not None
        assert (store.partitions(), store.unreadable_count()) == ({0}, 1)
        assert store.get("bad") is None  # asked again: still no state, still unreadable
        store.drop_partition(0)
        assert (store.unreadable("bad"), store.partitions()) == (None, set())


class TestRetention:
    @pytest.mark.parametrize(
        ("status", "age", "action"),
        [
            ("Completed", 2 * DAY, Retention.forget),
            ("Completed", DAY / 2, Retention.keep),
            ("InProgress", 2 * DAY, Retention.keep),
        ],
    )
    def test_decided_without_reading_the_value(
        self, status: str, age: timedelta, action: Retention
    ) -> None:
        """The same decision as for the state itself, from the mark alone."""
        state = synced(replace(job_state("a", status=status), updated_at=NOW - age))
        rules = {"retention": DAY, "forgotten_retention": 7 * DAY}
        unread = replace(held(state), value=b"not even JSON")
        assert retention_action(unread, NOW, **rules) is action
        assert retention_action(state, NOW, **rules) is action
