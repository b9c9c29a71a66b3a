"""Restore of changelog partitions, against a fake consumer that serves fixed records."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from consumer.domain.job import JobState, new_state
from consumer.domain.retention import forget
from consumer.domain.settled import SETTLED_HEADER, SettledJob, settled_header
from consumer.domain.state_codec import encode_state
from consumer.domain.value_compression import compressed
from consumer.errors import ChangelogShared
from consumer.state.continuity import ChangelogBounds, ChangelogOwner
from consumer.state.recovery import changelog_bounds, restore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "changelog"


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    offset: int = 0


class FakeConsumer:
    """Serves each partition's records in batches of ``batch``, from offset 0."""

    def __init__(self, records: dict[int, list[Record]], batch: int = 2) -> None:
        self.records = records
        self.batch = batch
        self.positions: dict[TopicPartition, int] = {}
        self.started = self.stopped = False
        self.gc_enabled_in_getmany: list[bool] = []
        self.calls: list[str] = []
        self.starts: dict[int, int] = {}

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, tps: list[TopicPartition]) -> None:
        self.calls.append("assign")
        self.positions = dict.fromkeys(tps, -1)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.positions[tp] = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.calls.append("end_offsets")
        return {tp: len(self.records.get(tp.partition, [])) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Every record of the fake is held: records deleted move the start in a real one."""
        self.calls.append("beginning_offsets")
        return {tp: self.starts.get(tp.partition, 0) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Record]]:
        self.gc_enabled_in_getmany.append(gc.isenabled())
        out = {}
        for tp in tps:
            at = self.positions[tp]
            served = self.records.get(tp.partition, [])[at : at + self.batch]
            self.positions[tp] = at + len(served)
            if served:
                out[tp] = served
        return out


def job(name: str, version: int = 1) -> JobState:
    return JobState(**{**_fields(new_state(name, NOW)), "version": version})


def _fields(state: JobState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


def record(state: JobState) -> Record:
    """The changelog record of ``state`` as the checkpoint writes it (headers included)."""
    settled = settled_header(state)
    headers = [] if settled is None else [(SETTLED_HEADER, settled)]
    return Record(state.client_job_id.encode(), encode_state(state), headers)


def settled(state: JobState) -> JobState:
    return replace(state, synced_version=state.version, synced_sha256="0" * 64)


async def run(consumer: FakeConsumer, partitions: list[int]) -> Any:
    return await restore(lambda **_: consumer, TOPIC, partitions)


class TestRestore:
    async def test_the_last_value_of_each_key_is_restored(self) -> None:
        """Superseded values and tombstoned keys leave nothing; each partition keeps its jobs,
        counted and sized as restored."""
        consumer = FakeConsumer(
            {
                0: [
                    record(job("a", 1)),
                    record(job("b", 1)),
                    record(job("a", 2)),
                    Record(b"b", None),
                    record(job("c", 1)),
                ],
                1: [record(job("d", 5))],
            }
        )
        states, report = await run(consumer, [1, 0, 1])
        assert {p: {k: s.version for k, s in jobs.items()} for p, jobs in states.items()} == {
            0: {"a": 2, "c": 1},
            1: {"d": 5},
        }
        assert (report.partitions, report.jobs, report.records, report.skipped) == (
            (0, 1),
            3,
            6,
            0,
        )
        assert report.end_offsets == {0: 5, 1: 1}
        assert report.value_bytes[0] == {
            "a": len(encode_state(job("a", 2))),
            "c": len(encode_state(job("c", 1))),
        }
        assert consumer.started
        assert consumer.stopped

    async def test_unreadable_values_are_reported_apart_and_markers_counted_apart(self) -> None:
        """A value that is no job state is no job (counted, and reported with why, for the
        store to hold apart); a forgotten-job marker is restored but not counted as a job."""
        marker = forget(job("gone", 3), NOW)
        consumer = FakeConsumer(
            {
                0: [
                    Record(b"bad", b"{not json"),
                    Record(b"gone", marker.to_json_bytes()),
                    record(job("kept")),
                    Record(None, b"keyless"),
                ]
            }
        )
        states, report = await run(consumer, [0])
        assert set(states[0]) == {"gone", "kept"}
        assert (report.jobs, report.forgotten, report.skipped) == (1, 1, 1)
        assert set(report.unreadable[0]) == {"bad"}

    async def test_a_settled_value_is_kept_unread_until_asked_for(self) -> None:
        """A value the checkpoint marked settled is restored as its bytes (a SettledJob with
        the mark's facts), unless the caller asks for states; an unmarked one is parsed."""
        done = settled(job("done", 4))
        open_job = job("open", 2)
        records = {0: [record(done), record(open_job)]}
        states, report = await run(FakeConsumer(records), [0])
        held = states[0]["done"]
        assert isinstance(held, SettledJob)
        assert (held.value, held.updated_at, held.terminal) == (encode_state(done), NOW, False)
        assert states[0]["open"] == open_job
        assert report.jobs == 2
        parsed, _ = await restore(lambda **_: FakeConsumer(records), TOPIC, [0], keep_settled=False)
        assert parsed[0] == {"done": done, "open": open_job}

    async def test_values_compressed_alone_are_restored_beside_plain_ones(self) -> None:
        """A changelog written by a version without value compression, then by one with it
        (an upgrade): each key's last value wins whatever its form; a settled one is kept as
        its frame (sized as stored), an unsettled one parsed; a damaged frame is skipped."""
        done, open_job = settled(job("done", 4)), job("open", 2)
        packed_done = compressed(encode_state(done))
        consumer = FakeConsumer(
            {
                0: [
                    record(job("done", 3)),
                    record(open_job),
                    Record(b"done", packed_done, record(done).headers),
                    Record(b"open", compressed(encode_state(job("open", 1)))),
                    Record(b"open", compressed(encode_state(open_job))),
                    record(job("plain", 7)),
                    Record(b"cut", compressed(encode_state(job("cut")))[:-6]),
                ]
            }
        )
        states, report = await run(consumer, [0])
        held = states[0]["done"]
        assert isinstance(held, SettledJob)
        assert held.value == packed_done
        assert (states[0]["open"], states[0]["plain"].version) == (open_job, 7)
        assert "cut" not in states[0]
        assert report.skipped == 1
        assert "damaged zstd frame" in report.unreadable[0]["cut"]
        assert report.value_bytes[0]["done"] == len(packed_done)

    async def test_a_settled_mark_that_cannot_be_read_skips_the_value(self) -> None:
        """A mark this version did not write is an unreadable record: skipped and counted, as
        an unreadable value is."""
        value = encode_state(settled(job("odd")))
        consumer = FakeConsumer({0: [Record(b"odd", value, [(SETTLED_HEADER, b"tomorrow|X")])]})
        states, report = await run(consumer, [0])
        assert (states[0], report.skipped, set(report.unreadable[0])) == ({}, 1, {"odd"})

    async def test_a_record_of_another_group_stops_the_restore(self) -> None:
        """Two groups given one changelog would restore each other's jobs: the first record
        another group wrote (a tombstone as much as a state) raises ``ChangelogShared`` naming
        the topic, partition, offset and both groups, and how to go on. The group's own
        records, records naming no group (written before the header) and those of a group it
        adopted are restored."""
        ours = [("basicsync-group", b"prod")]
        theirs = [("basicsync-group", b"staging")]
        mixed = {
            0: [
                Record(b"a", encode_state(job("a")), ours, offset=0),
                Record(b"b", encode_state(job("b")), [], offset=1),
                Record(b"a", None, theirs, offset=2),
            ]
        }
        prod = ChangelogOwner("prod")
        with pytest.raises(ChangelogShared) as raised:
            await restore(lambda **_: FakeConsumer(mixed), TOPIC, [0], owner=prod)
        message = str(raised.value)
        assert raised.value.writer == "staging"
        for part in (TOPIC, "partition 0", "offset 2", "'staging'", "'prod'", "ADOPT_CHANGELOG_OF"):
            assert part in message, part
        renamed = ChangelogOwner("prod", frozenset({"staging"}))
        states, _ = await restore(lambda **_: FakeConsumer(mixed), TOPIC, [0], owner=renamed)
        assert set(states[0]) == {"b"}
        states, _ = await restore(lambda **_: FakeConsumer(mixed), TOPIC, [0])  # a tool: no owner
        assert set(states[0]) == {"b"}

    async def test_empty_and_no_partitions(self) -> None:
        """A partition without records restores empty; no partitions read nothing."""
        states, report = await run(FakeConsumer({}), [2])
        assert (states, report.jobs, report.end_offsets) == ({2: {}}, 0, {2: 0})
        states, report = await run(FakeConsumer({}), [])
        assert (states, report.partitions, report.end_offsets) == ({}, (), {})

    async def test_collector_paused_only_while_parsing(self) -> None:
        """The cyclic collector is on while records are fetched and after the restore, also
        when a parse fails; it stays off when it was off before."""
        consumer = FakeConsumer({0: [record(job("a")), record(job("b"))], 1: []}, batch=1)
        await run(consumer, [0, 1])
        assert all(consumer.gc_enabled_in_getmany)
        assert gc.isenabled()

        checks: list[None] = []

        def exhausted() -> None:  # after the one fetched batch, then in the parse
            checks.append(None)
            if len(checks) > 1:
                raise MemoryError("limit")

        many = FakeConsumer({0: [record(job(f"j{n}")) for n in range(2_000)]}, batch=5_000)
        with pytest.raises(MemoryError):
            await restore(lambda **_: many, TOPIC, [0], exhausted)
        assert len(checks) == 2
        assert gc.isenabled()
        gc.disable()
        try:
            await run(FakeConsumer({0: [record(job("a"))]}), [0])
            assert not gc.isenabled()
        finally:
            gc.enable()


class TestChangelogBounds:
    async def test_read_committed_by_a_consumer_of_its_own_started_and_stopped(self) -> None:
        """The changelog's offsets of a take: the last stable offsets and the start offsets,
        asked on a client with no fetch outstanding (the group member's connection has
        long-polls in flight)."""
        fake = FakeConsumer({0: [Record(b"a", b"1")] * 3, 2: []})
        fake.starts[0] = 2
        asked: list[dict[str, Any]] = []

        def factory(**kwargs: Any) -> FakeConsumer:
            asked.append(kwargs)
            return fake

        assert await changelog_bounds(factory, TOPIC, [0, 2]) == {
            0: ChangelogBounds(start=2, end=3),
            2: ChangelogBounds(start=0, end=0),
        }
        assert asked == [{"isolation_level": "read_committed", "enable_auto_commit": False}]
        assert (fake.started, fake.stopped) == (True, True)
        assert fake.calls == ["end_offsets", "beginning_offsets"]

    @pytest.mark.parametrize("read", ["changelog_bounds", "restore"])
    async def test_a_consumer_whose_start_failed_is_stopped(self, read: str) -> None:
        """The broker unreachable during a take: the take fails and is tried again, so a
        short-lived consumer that may have connected before its start failed is closed."""
        fake = FakeConsumer({0: []})

        async def refused() -> None:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1, 0)]")

        fake.start = refused  # type: ignore[method-assign]
        reading = (
            changelog_bounds(lambda **_: fake, TOPIC, [0])
            if read == "changelog_bounds"
            else restore(lambda **_: fake, TOPIC, [0])
        )
        with pytest.raises(KafkaConnectionError):
            await reading
        assert (fake.stopped, fake.calls) == (True, [])

    async def test_a_restore_asks_the_end_offsets_before_it_assigns(self) -> None:
        """Once assigned, a partition read to its end (an empty changelog) is long-polled and
        the broker answers a connection's requests in order: asked after, the end offsets
        waited half a second behind that fetch."""
        fake = FakeConsumer({0: [Record(b"a", encode_state(job("a")))], 1: []})
        await restore(lambda **_: fake, TOPIC, [0, 1])
        assert fake.calls[:2] == ["end_offsets", "assign"]
