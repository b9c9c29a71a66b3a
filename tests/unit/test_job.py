"""Job state and the reducer (consumer.domain.job)."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from consumer.demo.example import EXAMPLE_BODY, example_job_events
from consumer.demo.jobs import demo_job
from consumer.domain import state_codec
from consumer.domain.basicsync import encode_body
from consumer.domain.document import StepWrapper, step_text
from consumer.domain.events import EventType, JobEvent, decode_event
from consumer.domain.job import (
    SEEN_IDS_LIMIT,
    JobState,
    Rejection,
    SyncMode,
    apply,
    is_postable,
    is_terminal,
    mark_sending,
    mark_synced,
    needs_sync,
    new_state,
    replays_as_duplicates,
    seen_key,
    step_order,
    time_text,
)
from consumer.domain.results import FailureReason
from consumer.domain.state import Step, json_text
from consumer.domain.state_codec import (
    StoredClocks,
    ValueParts,
    decode_state,
    decode_validated,
    encode_state,
    value_parts,
)
from consumer.domain.value_compression import compressed

JOB = "job-1"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=3)
_ids = iter(range(10**9))


def ev(
    event_type: EventType,
    data: dict[str, Any],
    event_id: str | None = None,
    time: datetime | None = None,
    source: str = "urn:test",
) -> JobEvent:
    return JobEvent.build(
        {
            "id": event_id or f"e{next(_ids):09d}",
            "source": source,
            "type": event_type,
            "subject": JOB,
            "time": time,
            "data": data,
        }
    )


def decoded(subject: str, event_type: EventType, data: dict[str, Any], time: str) -> JobEvent:
    """An event as the consumer gets it: structured bytes, its ``time`` text as sent."""
    envelope = {
        "specversion": "1.0",
        "id": f"e{next(_ids):09d}",
        "source": "urn:test",
        "type": event_type,
        "subject": subject,
        "time": time,
        "data": data,
    }
    return decode_event(subject.encode(), json.dumps(envelope).encode(), [])


def at(minute: int) -> datetime:
    """An event time ``minute`` minutes after 10:00."""
    return datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(minutes=minute)


def stamp(minute: int) -> str:
    return at(minute).isoformat()


def upsert(**data: Any) -> JobEvent:
    return ev(EventType.upserted, data)


def status(value: str, **data: Any) -> JobEvent:
    return ev(EventType.status_changed, {"status": value, **data})


def step(uid: str, number: int | None = None, at: str | None = None, **more: Any) -> dict[str, Any]:
    return {"singleStep": {"uniqueStepId": uid, "stepNumber": number, "completed": at, **more}}


def completed(uid: str, number: int | None = None, at: str | None = None, **more: Any) -> JobEvent:
    return ev(EventType.step_completed, step(uid, number, at, **more))


def body(state: JobState) -> dict[str, Any]:
    """The request body of ``state`` as data."""
    parsed: dict[str, Any] = json.loads(encode_body(state))
    return parsed


def single(kept: Step | str | None) -> dict[str, Any]:
    """The ``singleStep`` of a kept step (or of a current step's text) as data."""
    assert kept is not None
    parsed: dict[str, Any] = json.loads(kept.json if isinstance(kept, Step) else kept)
    return parsed["singleStep"]  # type: ignore[no-any-return]


def run(*events: JobEvent, state: JobState | None = None, now: datetime = NOW) -> JobState:
    for event in events:
        result = apply(state, event, now)
        assert isinstance(result, JobState), result
        state = result
    assert state is not None
    return state


def reduce_all(events: list[JobEvent], state: JobState | None = None) -> JobState | None:
    """Apply in order, skipping rejected events (as the pipeline does)."""
    for event in events:
        result = apply(state, event, NOW)
        if isinstance(result, JobState):
            state = result
    return state


def states_on_the_way(events: list[JobEvent], state: JobState | None = None) -> Iterator[JobState]:
    """Each state the events reach in order, rejected events skipped (as the pipeline does)."""
    for event in events:
        result = apply(state, event, NOW)
        if isinstance(result, JobState):
            state = result
            yield state


class TestUpserted:
    def test_creates_job(self) -> None:
        """The first event of a job creates its state, clientJobId from the subject."""
        state = run(upsert(workflowId="wf"))
        assert state.client_job_id == JOB
        assert state.document.metadata.client_job_id == JOB
        assert state.document.metadata.workflow_id == "wf"
        assert state.version == 1

    def test_present_fields_overwrite_absent_kept(self) -> None:
        """Present fields overwrite, absent ones stay, a present null clears."""
        state = run(
            upsert(jobTitle="a", team="t", username="u"), upsert(jobTitle="b", username=None)
        )
        meta = state.document.metadata
        assert (meta.job_title, meta.username, state.document.team) == ("b", None, "t")

    def test_metadata_map_merges_by_key(self) -> None:
        """metadata.metadata merges by key, kept sorted; a null map changes nothing."""
        state = run(
            upsert(metadata={"b": "1", "a": "1"}),
            upsert(metadata={"b": "2", "c": "3"}),
            upsert(metadata=None),
        )
        assert state.document.metadata.metadata == {"a": "1", "b": "2", "c": "3"}
        assert list(state.document.metadata.metadata) == ["a", "b", "c"]

    def test_document_level_fields(self) -> None:
        """team, hierarchyStack and packetIds land on the document, not in metadata."""
        state = run(upsert(team="t", hierarchyStack=["x"], packetIds=["p"]))
        assert state.document.team == "t"
        assert state.document.hierarchy_stack == ["x"]
        assert state.document.packet_ids == ["p"]

    def test_status_via_upsert_obeys_terminal_rule(self) -> None:
        """An upserted non-terminal status does not revert a terminal one; other fields apply."""
        state = run(status("Completed"), upsert(status="InProgress", jobTitle="late"))
        assert state.status == "Completed"
        assert state.document.metadata.job_title == "late"

    def test_upsert_abort_of_completed_rejected(self) -> None:
        """Upserting status Aborted onto a Completed job is rejected."""
        state = run(status("Completed"))
        assert isinstance(apply(state, upsert(status="Aborted"), NOW), Rejection)


class TestSteps:
    def test_upsert_by_unique_step_id(self) -> None:
        """A step with a known uniqueStepId replaces the old entry."""
        state = run(completed("u1", 1, note="old"), completed("u1", 1, note="new"))
        steps = state.document.completed_steps
        assert [single(s)["note"] for s in steps] == ["new"]

    def test_ordering(self) -> None:
        """Steps sort by stepNumber, then time, then uniqueStepId; missing values last."""
        state = run(
            completed("z", None),
            completed("b", 2, "2026-01-01T10:00:00Z"),
            completed("a", 2, "2026-01-01T10:00:00Z"),
            completed("c", 2, "2026-01-01T09:00:00.5+00:00"),
            completed("d", 2),
            completed("e", 1, "2026-01-02T00:00:00Z"),
        )
        uids = [s.unique_step_id for s in state.document.completed_steps]
        assert uids == ["e", "c", "a", "b", "d", "z"]

    def test_cancelled_separate(self) -> None:
        """Cancelled steps go to cancelledSteps; completedSteps is untouched."""
        state = run(ev(EventType.step_cancelled, step("u1", 1)), completed("u2", 1))
        assert [s.unique_step_id for s in state.document.cancelled_steps] == ["u1"]
        assert [s.unique_step_id for s in state.document.completed_steps] == ["u2"]

    def test_steps_apply_after_terminal(self) -> None:
        """A late step event still lands after the job is Completed."""
        state = run(status("Completed"), completed("u1", 1))
        assert len(state.document.completed_steps) == 1

    def test_step_order_key_mixed_offsets(self) -> None:
        """Times with different offsets are compared as instants."""
        early = JobEvent.build(
            {
                "id": "x",
                "source": "s",
                "type": EventType.step_completed,
                "subject": JOB,
                "data": step("b", 1, "2026-01-01T12:00:00+02:00"),
            }
        )
        late = completed("a", 1, "2026-01-01T11:00:00Z")
        state = run(late, early)
        assert state.document.completed_steps[0].unique_step_id == "b"
        assert step_order(state.document.completed_steps[0]) < step_order(
            state.document.completed_steps[1]
        )

    def test_a_kept_step_is_flat_its_order_its_first_five_fields(self) -> None:
        """A step holds its ordering key in its own fields (no nested tuple per step); the key
        is the same whether the step came from an event or back from the changelog."""
        state = run(completed("b", 2, "2026-01-01T11:00:00Z"), completed("a", 1))
        kept = state.document.completed_steps
        assert [s.unique_step_id for s in kept] == ["a", "b"]
        first = kept[0]
        assert first.order == (False, 1, True, 0.0, "a") == tuple(first)[:5]
        assert not any(isinstance(field, tuple) for field in first)
        assert decode_state(encode_state(state)).document.completed_steps == kept


class TestStatus:
    def test_sets_status_and_companions(self) -> None:
        """status.changed sets status and the optional fields present."""
        state = run(
            upsert(abandonReason="x"),
            status("Paused", updated="2026-01-01T00:00:00Z", currentStep=step("u", 1)),
        )
        meta = state.document.metadata
        assert meta.status == "Paused"
        assert meta.updated == "2026-01-01T00:00:00Z"
        assert meta.current_step is not None
        assert meta.abandon_reason == "x"

    def test_unknown_status_passes_through(self) -> None:
        """A status we do not know is kept as sent."""
        assert run(status("WaitingForParts")).status == "WaitingForParts"

    def test_terminal_not_reverted(self) -> None:
        """After Completed, a non-terminal status and its companion fields are ignored."""
        done = run(status("Completed", updated="2026-01-01T00:00:00Z"))
        state = run(status("InProgress", updated="2026-02-01T00:00:00Z"), state=done)
        assert state.document == done.document
        assert state.version == done.version + 1
        assert is_terminal(state)

    def test_same_terminal_again_applies(self) -> None:
        """Completed then Completed again updates the companion fields."""
        state = run(status("Completed"), status("Completed", modified="2026-01-01T00:00:00Z"))
        assert state.document.metadata.modified == "2026-01-01T00:00:00Z"

    def test_aborted_not_reverted(self) -> None:
        """Aborted is terminal too."""
        assert run(ev(EventType.aborted, {}), status("Paused")).status == "Aborted"

    def test_completing_aborted_rejected(self) -> None:
        """Aborted -> Completed is an invalid transition."""
        state = run(ev(EventType.aborted, {}))
        result = apply(state, status("Completed"), NOW)
        assert isinstance(result, Rejection)
        assert result.reason is FailureReason.invalid_transition


class TestAborted:
    def test_sets_status_and_reason(self) -> None:
        """aborted sets status Aborted and abandonReason."""
        state = run(upsert(workflowId="wf"), ev(EventType.aborted, {"reason": "gone"}))
        assert state.status == "Aborted"
        assert state.document.metadata.abandon_reason == "gone"

    def test_without_reason_keeps_reason(self) -> None:
        """An abort without reason leaves abandonReason as it was."""
        state = run(upsert(abandonReason="earlier"), ev(EventType.aborted, {"userId": "u"}))
        assert state.document.metadata.abandon_reason == "earlier"
        assert state.document.metadata.user_id is None

    def test_abort_completed_rejected(self) -> None:
        """Aborting a Completed job is rejected with invalid_transition; state unchanged."""
        state = run(status("Completed"))
        result = apply(state, ev(EventType.aborted, {"reason": "x"}), NOW)
        assert isinstance(result, Rejection)
        assert result.reason is FailureReason.invalid_transition
        assert "Completed" in result.message
        assert state.status == "Completed"


class TestExcluded:
    def test_appends_and_sets_flag(self) -> None:
        """Each excluded event appends an entry; excluded follows the last one."""
        state = run(
            ev(EventType.excluded, {"userId": "a", "reason": "r", "isExcluded": True}),
            ev(EventType.excluded, {"userId": "b", "isExcluded": False}),
        )
        assert [e.user_id for e in state.document.job_exclusion] == ["a", "b"]
        assert state.document.excluded is False


class TestIdempotency:
    def test_duplicate_returns_same_object(self) -> None:
        """The same event id twice returns the very same state."""
        event = upsert(team="t")
        state = run(event)
        assert apply(state, event, NOW + timedelta(hours=1)) is state

    def test_seen_ids_bounded(self) -> None:
        """Only the last SEEN_IDS_LIMIT ids are remembered."""
        events = [upsert(team=str(i)) for i in range(SEEN_IDS_LIMIT + 10)]
        state = run(*events)
        assert len(state.seen_event_ids) == SEEN_IDS_LIMIT
        assert state.seen_event_ids[-1] == seen_key(events[-1])
        assert seen_key(events[0]) not in state.seen_event_ids

    def test_rejection_leaves_no_trace(self) -> None:
        """A rejected event is not remembered, so a redelivery is rejected again."""
        state = run(status("Completed"))
        abort = ev(EventType.aborted, {})
        assert isinstance(apply(state, abort, NOW), Rejection)
        assert seen_key(abort) not in state.seen_event_ids
        assert isinstance(apply(state, abort, NOW), Rejection)


class TestReusedIds:
    """Another event under an id the job has seen: refused, never taken for a redelivery."""

    def test_other_content_under_a_seen_id_is_refused_and_changes_nothing(self) -> None:
        first = ev(EventType.upserted, {"jobTitle": "a"}, event_id="x", time=at(0))
        state = run(first)
        for reused in (
            ev(EventType.upserted, {"jobTitle": "b"}, event_id="x", time=at(0)),
            ev(EventType.upserted, {"jobTitle": "b"}, event_id="x", time=at(5)),
            ev(EventType.step_completed, step("s1", 1), event_id="x", time=at(1)),
            ev(EventType.aborted, {"reason": "r"}, event_id="x", time=at(2)),
        ):
            result = apply(state, reused, NOW)
            assert isinstance(result, Rejection), reused
            assert result.reason is FailureReason.invalid_event
            assert "event id 'x' of source 'urn:test' was applied" in result.message
        assert body(state)["metadata"]["jobTitle"] == "a"

    def test_the_same_id_from_another_source_is_another_event(self) -> None:
        """CloudEvents makes source and id unique together: an ERP's ``1001`` and a MES's
        ``1001`` are two events. Both apply; each again is its own redelivery, also after a
        changelog round trip."""
        erp = ev(EventType.upserted, {"jobTitle": "a"}, "1001", at(0), source="urn:erp")
        mes = ev(EventType.step_completed, step("s1", 1), "1001", at(1), source="urn:mes")
        state = run(erp, mes)
        assert (state.version, body(state)["metadata"]["jobTitle"]) == (2, "a")
        assert [single(s)["uniqueStepId"] for s in state.document.completed_steps] == ["s1"]
        restored = decode_state(encode_state(state))
        for again in (erp, mes):
            assert apply(state, again, NOW) is state
            assert apply(restored, again, NOW) is restored

    def test_sources_of_most_of_a_megabyte_are_not_kept(self) -> None:
        """A producer may send a unique source of most of a megabyte with each event: none
        is kept once its event is gone (cached, 1,024 of them would be a gigabyte), and a
        long source tags its ids as a short one does."""
        long_source = "urn:" + "x" * 600
        assert seen_key(ev(EventType.upserted, {}, "1", source=long_source)) == "1\n" + (
            f"{zlib.crc32(long_source.encode()):08x}"
        )
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(20):
                source = f"urn:{n}:" + "x" * 500_000
                seen_key(ev(EventType.upserted, {}, "1", source=source))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 1_000_000, grown

    def test_a_state_of_bare_ids_still_knows_its_redeliveries(self) -> None:
        """A state written before sources were told apart remembers bare ids: a redelivery
        across the upgrade is still one, and another source's other content under such an id
        is refused, as then. Once its bare ids have rolled out, sources are told apart."""
        first = ev(EventType.upserted, {"jobTitle": "a"}, "1001", at(0), source="urn:erp")
        state = run(first)
        bare = replace(state, seen_event_ids=("1001",))
        assert apply(bare, first, NOW) is bare
        other = ev(EventType.upserted, {"jobTitle": "b"}, "1001", at(1), source="urn:mes")
        assert isinstance(apply(bare, other, NOW), Rejection)
        rolled = bare
        for n in range(SEEN_IDS_LIMIT):
            applied = apply(rolled, ev(EventType.upserted, {"team": f"t{n}"}, time=at(2)), NOW)
            assert isinstance(applied, JobState)
            rolled = applied
        assert "1001" not in rolled.seen_event_ids
        later = ev(EventType.upserted, {"jobTitle": "c"}, "1001", at(3), source="urn:mes")
        assert body(run(later, state=rolled))["metadata"]["jobTitle"] == "c"

    def test_a_redelivery_that_lost_a_tie_since_is_still_a_redelivery(self) -> None:
        """``a`` then ``b`` at one time: ``b`` holds the title. ``a`` again changes nothing
        (applied before everything of its time, it loses), so it is a redelivery."""
        a = ev(EventType.upserted, {"jobTitle": "a", "team": "t"}, event_id="a", time=at(0))
        b = ev(EventType.upserted, {"jobTitle": "b"}, event_id="b", time=at(0))
        state = run(a, b)
        assert apply(state, a, NOW) is state
        assert apply(decode_state(encode_state(state)), a, NOW) == state

    def test_redeliveries_of_every_kind_after_later_events_are_redeliveries(self) -> None:
        events = [
            ev(EventType.upserted, {"workflowId": "w", "jobTitle": "a"}, time=at(0)),
            ev(EventType.step_completed, step("s1", 1, note="n"), time=at(1)),
            ev(EventType.status_changed, {"status": "InProgress", "updated": stamp(2)}, time=at(2)),
            ev(EventType.excluded, {"userId": "u", "isExcluded": True}, time=at(3)),
            ev(EventType.step_completed, step("s1", 1, note="m"), time=at(4)),
            ev(EventType.status_changed, {"status": "Completed"}, time=at(5)),
            ev(EventType.upserted, {"jobTitle": "z"}, time=at(6)),
        ]
        state = run(*events)
        for event in events:
            assert apply(state, event, NOW) is state, event.type

    def test_a_reused_id_whose_content_loses_everywhere_changes_nothing_and_is_dropped(
        self,
    ) -> None:
        """Older than every write it makes, the other content would change nothing applied
        either: it is dropped as a duplicate, as before."""
        state = run(ev(EventType.upserted, {"jobTitle": "a"}, event_id="x", time=at(5)))
        stale = ev(EventType.upserted, {"jobTitle": "b"}, event_id="x", time=at(1))
        assert apply(state, stale, NOW) is state

    def test_without_time_or_arrivals_a_seen_id_is_a_duplicate_as_before(self) -> None:
        untimed = run(ev(EventType.upserted, {"jobTitle": "a"}, event_id="x"))
        assert apply(untimed, ev(EventType.upserted, {"jobTitle": "b"}, event_id="x"), NOW) is (
            untimed
        )
        clockless = replace(  # as written before clocks and arrival numbers
            run(ev(EventType.upserted, {"jobTitle": "a"}, event_id="x", time=at(0))),
            clocks={},
            arrivals=0,
        )
        other = ev(EventType.upserted, {"jobTitle": "b"}, event_id="x", time=at(9))
        assert apply(clockless, other, NOW) is clockless


class TestBookkeeping:
    def test_versions_and_times(self) -> None:
        """version counts applied events; first_unsynced_at sticks; updated_at moves."""
        later = NOW + timedelta(seconds=5)
        state = run(upsert(team="a"))
        state = run(upsert(team="b"), state=state, now=later)
        assert state.version == 2
        assert state.first_unsynced_at == NOW
        assert state.updated_at == later

    def test_mark_synced(self) -> None:
        """mark_synced records version, hash, jobId and clears first_unsynced_at."""
        state = mark_synced(run(upsert(workflowId="wf")), 1, "h", "srv-1", NOW)
        assert (state.synced_version, state.synced_sha256, state.job_id) == (1, "h", "srv-1")
        assert state.first_unsynced_at is None
        assert state.synced_at == NOW
        assert mark_synced(state, 1, "h2", None, NOW).job_id == "srv-1"

    def test_mark_synced_lagging(self) -> None:
        """Syncing an older version keeps first_unsynced_at: the job still needs a sync."""
        state = run(upsert(workflowId="wf"), upsert(team="t"))
        synced = mark_synced(state, 1, "h", None, NOW)
        assert synced.first_unsynced_at == NOW
        assert needs_sync(synced, SyncMode.every_change)

    def test_mark_synced_never_goes_back(self) -> None:
        """Recording an older version than the synced one changes nothing."""
        state = mark_synced(run(upsert(workflowId="wf"), upsert(team="t")), 2, "h", None, NOW)
        assert mark_synced(state, 1, "old", None, NOW) is state

    def test_mark_synced_future_version(self) -> None:
        """A version the state never had (state replaced meanwhile) records nothing."""
        state = run(upsert(workflowId="wf"))
        assert mark_synced(state, 2, "h", None, NOW) is state

    def test_postable_and_modes(self) -> None:
        """Only jobs with a workflowId are posted; terminal_only waits for Completed/Aborted."""
        assert not is_postable(run(upsert(team="t")))
        assert not needs_sync(run(upsert(team="t")), SyncMode.every_change)
        state = run(upsert(workflowId="wf"))
        assert needs_sync(state, SyncMode.every_change)
        assert not needs_sync(state, SyncMode.terminal_only)
        done = run(status("Completed"), state=state)
        assert needs_sync(done, SyncMode.terminal_only)
        assert not needs_sync(mark_synced(done, 2, "h", None, NOW), SyncMode.terminal_only)

    def test_new_state(self) -> None:
        """A fresh state is empty, version 0, never synced."""
        state = new_state(JOB, NOW)
        assert (state.version, state.synced_version, state.seen_event_ids) == (0, 0, ())


class TestArrivalOrder:
    """Fields are last writer wins by event clock: time, then arrival within the job."""

    def test_late_upsert_does_not_overwrite_newer_status_fields(self) -> None:
        """An upsert carrying ``updated`` = created time, arriving after a later status change,
        leaves the later ``updated`` and status alone but fills the fields only it writes."""
        change = ev(
            EventType.status_changed, {"status": "InProgress", "updated": stamp(5)}, None, at(5)
        )
        create = ev(
            EventType.upserted,
            {"workflowId": "wf", "status": "New", "updated": stamp(0)},
            None,
            at(0),
        )
        meta = run(change, create).document.metadata
        assert (meta.status, meta.updated, meta.workflow_id) == ("InProgress", stamp(5), "wf")

    def test_metadata_map_key_by_key(self) -> None:
        """Each key of metadata.metadata is last writer wins on its own."""
        newer = ev(EventType.upserted, {"metadata": {"a": "new"}}, None, at(2))
        older = ev(EventType.upserted, {"metadata": {"a": "old", "b": "old"}}, None, at(1))
        assert run(newer, older).document.metadata.metadata == {"a": "new", "b": "old"}

    def test_older_step_event_loses(self) -> None:
        """A step event older than the one held for its uniqueStepId changes nothing."""
        newer = ev(EventType.step_completed, step("u1", 1, note="new"), None, at(2))
        older = ev(EventType.step_completed, step("u1", 1, note="old"), None, at(1))
        assert [single(s)["note"] for s in run(newer, older).document.completed_steps] == ["new"]

    def test_ties_applied_in_arrival_order(self) -> None:
        """Two events at the same time: the one that arrived later wins, whatever the ids."""
        a = ev(EventType.upserted, {"team": "a"}, "id-a", at(1))
        b = ev(EventType.upserted, {"team": "b"}, "id-b", at(1))
        assert run(a, b).document.team == "b"
        assert run(b, a).document.team == "a"

    def test_times_a_nanosecond_clock_tells_apart_within_one_microsecond_tie(self) -> None:
        """Event times are compared to the microsecond (docs/contract.md §5.1): the later
        nanosecond does not win over a later arrival, and the body keeps the sent text."""
        later, earlier = "2026-01-01T10:00:00.1234569Z", "2026-01-01T10:00:00.1234561Z"
        a = decoded(JOB, EventType.upserted, {"team": "a", "updated": later}, later)
        b = decoded(JOB, EventType.upserted, {"team": "b", "updated": earlier}, earlier)
        assert body(run(a, b))["metadata"]["updated"] == earlier
        assert run(a, b).document.team == "b"
        assert run(b, a).document.team == "a"

    def test_same_time_status_changes_in_partition_order(self) -> None:
        """A producer stamping a batch with one time: Paused then InProgress ends InProgress,
        and a step and its correction end with the correction."""
        paused = ev(EventType.status_changed, {"status": "Paused"}, "z", at(1))
        resumed = ev(EventType.status_changed, {"status": "InProgress"}, "a", at(1))
        assert run(paused, resumed).status == "InProgress"
        first = ev(EventType.step_completed, step("u1", 1, note="typo"), "z", at(1))
        fixed = ev(EventType.step_completed, step("u1", 1, note="fixed"), "a", at(1))
        assert single(run(first, fixed).document.completed_steps[0])["note"] == "fixed"

    def test_earlier_time_still_loses_to_earlier_arrival(self) -> None:
        """Arrival only breaks ties: a later arrival with an earlier time loses (last writer
        wins by time, across topics)."""
        newer = ev(EventType.upserted, {"team": "newer"}, None, at(2))
        older = ev(EventType.upserted, {"team": "older"}, None, at(1))
        assert run(newer, older).document.team == "newer"

    def test_arrivals_count_applied_events_only(self) -> None:
        """Duplicates and rejected events take no arrival number; the count survives the
        changelog, so a restored state continues it."""
        done = status("Completed")
        state = run(upsert(team="t"), done)
        assert state.arrivals == 2
        assert apply(state, done, NOW) is state
        assert isinstance(apply(state, ev(EventType.aborted, {}), NOW), Rejection)
        restored = decode_state(encode_state(state))
        assert restored.arrivals == 2
        assert run(upsert(team="u"), state=restored).arrivals == 3

    def test_time_compared_as_instant(self) -> None:
        """Event times with different offsets order by the instant they denote."""
        plus_two = ev(
            EventType.upserted,
            {"team": "early"},
            None,
            datetime.fromisoformat("2026-01-01T11:00:00+02:00"),
        )
        utc = ev(EventType.upserted, {"team": "late"}, None, at(0))
        assert run(utc, plus_two).document.team == "late"

    def test_event_without_time_ordered_by_arrival(self) -> None:
        """Without ``time`` an event orders after every event applied before it, whatever the
        processing time (a member whose wall clock is behind changes nothing)."""
        first = upsert(team="first")
        second = upsert(team="second")
        state = run(first, now=NOW + timedelta(hours=1))
        state = run(second, state=state, now=NOW)
        assert state.document.team == "second"

    def test_event_without_time_takes_the_latest_known_time(self) -> None:
        """A timeless event ties with the job's latest time and wins (it arrived later); a
        later arrival with an earlier time loses to it, one with a later time wins."""
        timed = ev(EventType.upserted, {"team": "timed"}, None, at(5))
        timeless = upsert(team="timeless")
        state = run(timed, timeless)
        assert state.document.team == "timeless"
        assert state.latest_time == "2026-01-01T10:05:00.000000Z"
        earlier = ev(EventType.upserted, {"team": "earlier"}, None, at(4))
        assert run(earlier, state=state).document.team == "timeless"
        later = ev(EventType.upserted, {"team": "later"}, None, at(6))
        assert run(later, state=state).document.team == "later"

    def test_first_event_without_time_loses_to_any_timed_one(self) -> None:
        """Before any time is known a timeless event has the earliest clock, so a timed
        event arriving after it wins (it also arrived later)."""
        state = run(upsert(team="timeless"), ev(EventType.upserted, {"team": "t"}, None, at(0)))
        assert state.document.team == "t"

    def test_terminal_beats_later_non_terminal(self) -> None:
        """Completed replaces InProgress even when the InProgress is newer (and arrived first);
        the newer InProgress is void with its companions, which fall back to older writes."""
        create = ev(EventType.upserted, {"updated": stamp(0)}, None, at(0))
        moving = ev(
            EventType.status_changed,
            {"status": "InProgress", "updated": stamp(5), "currentStep": step("u", 1)},
            None,
            at(5),
        )
        done = ev(EventType.status_changed, {"status": "Completed"}, None, at(3))
        for order in ([create, moving, done], [moving, done, create], [done, moving, create]):
            meta = run(*order).document.metadata
            assert (meta.status, meta.updated, meta.current_step) == ("Completed", stamp(0), None)

    def test_non_terminal_before_terminal_keeps_companions(self) -> None:
        """A non-terminal status older than the terminal one loses its status but its companion
        fields still count (they happened while the job was open), in any arrival order."""
        moving = ev(
            EventType.status_changed,
            {"status": "InProgress", "currentStep": step("u", 1), "updated": stamp(1)},
            None,
            at(1),
        )
        done = ev(EventType.aborted, {"reason": "gone"}, None, at(3))
        for order in ([moving, done], [done, moving]):
            state = run(*order)
            meta = state.document.metadata
            assert (meta.status, meta.updated, meta.abandon_reason) == ("Aborted", stamp(1), "gone")
            assert meta.current_step is not None
        # They stay retractable: an abort with an even earlier time would still void them.
        state = run(ev(EventType.aborted, {}, None, at(0)), state=state)
        assert (state.document.metadata.updated, state.document.metadata.current_step) == (
            None,
            None,
        )

    def test_retractable_writes_survive_the_changelog(self) -> None:
        """A state holding retractable writes round-trips through JSON and still retracts."""
        upserted = ev(EventType.upserted, {"currentStep": step("old", 1)}, None, at(0))
        moving = ev(
            EventType.status_changed,
            {"status": "Paused", "currentStep": step("new", 2)},
            None,
            at(5),
        )
        state = run(upserted, moving)
        assert set(state.retractable) == {"currentStep"}
        restored = decode_state(encode_state(state))
        assert restored == state
        done = run(
            ev(EventType.status_changed, {"status": "Completed"}, None, at(3)), state=restored
        )
        current = done.document.metadata.current_step
        assert single(current)["uniqueStepId"] == "old"
        assert done.retractable == {}

    def test_same_terminal_twice_last_writer_wins(self) -> None:
        """Completed twice: the companions of the later one win, in either order."""
        one = ev(
            EventType.status_changed, {"status": "Completed", "modified": stamp(1)}, None, at(1)
        )
        two = ev(
            EventType.status_changed, {"status": "Completed", "modified": stamp(2)}, None, at(2)
        )
        assert run(one, two).document == run(two, one).document
        assert run(two, one).document.metadata.modified == stamp(2)

    def test_completed_aborted_conflict_rejects_second_arrival(self) -> None:
        """The one arrival-dependent rule: the second of Completed/Aborted is rejected."""
        done = ev(EventType.status_changed, {"status": "Completed"}, None, at(5))
        abort = ev(EventType.aborted, {}, None, at(1))
        assert isinstance(apply(run(done), abort, NOW), Rejection)
        assert isinstance(apply(run(abort), done, NOW), Rejection)

    def test_exclusions_ordered_by_time(self) -> None:
        """jobExclusion is ordered by event clock; excluded follows the latest entry."""
        late = ev(EventType.excluded, {"userId": "late", "isExcluded": False}, None, at(3))
        early = ev(EventType.excluded, {"userId": "early", "isExcluded": True}, None, at(1))
        state = run(late, early)
        assert [e.user_id for e in state.document.job_exclusion] == ["early", "late"]
        assert state.document.excluded is False

    def test_exclusion_redelivered_beyond_seen_window(self) -> None:
        """An exclusion whose id was forgotten is not added twice (an equal entry of the same
        time is held), although it is a new arrival."""
        exclusion = ev(EventType.excluded, {"userId": "u", "isExcluded": True}, None, at(0))
        state = run(exclusion, *(upsert(team=str(i)) for i in range(SEEN_IDS_LIMIT)))
        assert seen_key(exclusion) not in state.seen_event_ids
        assert len(run(exclusion, state=state).document.job_exclusion) == 1

    def test_clocks_only_for_written_fields(self) -> None:
        """The state keeps one clock per written field path, nothing for untouched ones."""
        state = run(
            ev(EventType.upserted, {"team": "t", "metadata": {"k": "v"}}, "u1", at(0)),
            ev(EventType.step_completed, step("s1", 1), "s1", at(1)),
        )
        assert state.clocks == {
            "team": ("2026-01-01T10:00:00.000000Z", 1),
            "metadata.k": ("2026-01-01T10:00:00.000000Z", 1),
            "completedSteps.s1": ("2026-01-01T10:01:00.000000Z", 2),
        }

    def test_clocks_stored_grouped_by_event(self) -> None:
        """The changelog stores the clocks grouped by event, ``"<time> <arrival>"``; a timeless
        first event has an empty time."""
        state = run(
            upsert(jobTitle="first"),
            ev(EventType.upserted, {"team": "t", "jobTitle": "j"}, "u1", at(0)),
            ev(EventType.step_completed, step("s1", 1), "s1", at(1)),
        )
        stored = json.loads(encode_state(state))
        assert stored["clocks"] == {
            "2026-01-01T10:00:00.000000Z 2": ["jobTitle", "team"],
            "2026-01-01T10:01:00.000000Z 3": ["completedSteps.s1"],
        }
        assert (stored["arrivals"], stored["latest_time"]) == (3, "2026-01-01T10:01:00.000000Z")
        assert decode_state(encode_state(state)) == state
        only_timeless = run(upsert(team="x"))
        assert json.loads(encode_state(only_timeless))["clocks"] == {" 1": ["team"]}
        assert decode_state(encode_state(only_timeless)) == only_timeless

    def test_state_with_event_id_clocks(self) -> None:
        """A changelog value written before arrival numbers (clocks ``(time, id)``, grouped or
        per path, no ``arrivals``) loads with its writes at arrival 0: a same-time event wins,
        an earlier one loses, an event without time takes the latest held time."""
        times = {"t0": "2026-01-01T10:00:00.000000Z", "t5": "2026-01-01T10:05:00.000000Z"}
        grouped = {
            "client_job_id": JOB,
            "document": {"metadata": {"client_job_id": JOB, "status": "Completed"}, "team": "a"},
            "version": 3,
            "updated_at": NOW.isoformat(),
            "clocks": {f"{times['t5']} zz-id": ["team"], f"{times['t0']} aa-id": ["status"]},
            "terminal_clock": [times["t0"], "aa-id"],
            "exclusion_clocks": [],
            "retractable": {},
        }
        per_path = {
            **grouped,
            "clocks": {"team": [times["t5"], "zz-id"], "status": [times["t0"], "aa-id"]},
        }
        for stored in (grouped, per_path):
            legacy = decode_state(json.dumps(stored).encode())
            assert legacy.clocks == {"team": (times["t5"], 0), "status": (times["t0"], 0)}
            assert legacy.terminal_clock == (times["t0"], 0)
            same = ev(EventType.upserted, {"team": "same"}, "a", at(5))
            assert run(same, state=legacy).document.team == "same"
            older = ev(EventType.upserted, {"team": "older"}, None, at(4))
            assert run(older, state=legacy).document.team == "a"
            timeless = run(upsert(team="timeless"), state=legacy)
            assert (timeless.document.team, timeless.clocks["team"]) == (
                "timeless",
                (times["t5"], 1),
            )

    def test_state_without_clocks(self) -> None:
        """A changelog value without field clocks still loads (a rolling upgrade may meet one);
        events overwrite its fields and a terminal status it holds stays."""
        old = run(status("Completed"), upsert(team="old"))
        stored = json.loads(encode_state(old))
        for name in ("clocks", "terminal_clock", "exclusion_clocks"):
            stored.pop(name, None)
        legacy = decode_state(json.dumps(stored).encode())
        assert (legacy.clocks, legacy.terminal_clock, legacy.exclusion_clocks) == ({}, None, ())
        state = run(
            ev(EventType.upserted, {"team": "new"}, None, at(0)),
            status("InProgress", updated=stamp(0)),
            state=legacy,
        )
        assert (state.document.team, state.status) == ("new", "Completed")
        assert state.document.metadata.updated is None


# --- properties ---------------------------------------------------------------------------

_STAMPS = st.sampled_from([None, "2026-01-01T10:00:00Z", "2026-01-01T09:00:00.5Z"])
_STATUSES = st.sampled_from(["New", "InProgress", "Paused", "Completed", "Aborted", "Odd"])
_step_data = st.builds(
    step,
    uid=st.sampled_from(["s1", "s2", "s3", "s4"]),
    number=st.one_of(st.none(), st.integers(1, 3)),
    at=_STAMPS,
    note=st.one_of(st.none(), st.text(max_size=3)),
)
_event_data = st.one_of(
    st.tuples(
        st.just(EventType.upserted),
        st.fixed_dictionaries(
            {},
            optional={
                "workflowId": st.sampled_from(["wf1", "wf2"]),
                "jobTitle": st.one_of(st.none(), st.text(max_size=5)),
                "metadata": st.dictionaries(st.sampled_from("abc"), st.text(max_size=2)),
                "status": st.one_of(st.none(), _STATUSES),
                "team": st.one_of(st.none(), st.text(max_size=3)),
                "packetIds": st.lists(st.text(max_size=2), max_size=2),
                "updated": _STAMPS,
                "abandonReason": st.none() | st.just("u"),
            },
        ),
    ),
    st.tuples(st.sampled_from([EventType.step_completed, EventType.step_cancelled]), _step_data),
    st.tuples(
        st.just(EventType.status_changed),
        st.fixed_dictionaries(
            {"status": _STATUSES},
            optional={
                "updated": _STAMPS,
                "modified": _STAMPS,
                "abandonReason": st.none() | st.just("r"),
                "currentStep": st.none() | st.sampled_from(["c1", "c2"]).map(step),
            },
        ),
    ),
    st.tuples(
        st.just(EventType.excluded),
        st.fixed_dictionaries({"userId": st.just("u"), "isExcluded": st.booleans()}),
    ),
    st.tuples(
        st.just(EventType.aborted),
        st.fixed_dictionaries({}, optional={"reason": st.text(max_size=3)}),
    ),
)


#: Few distinct times, so ties (broken by arrival) and events without time are common.
_TIMES = st.one_of(st.none(), st.integers(0, 4).map(at))


@st.composite
def event_sequences(draw: st.DrawFn) -> list[JobEvent]:
    drawn = draw(st.lists(st.tuples(_event_data, _TIMES), min_size=1, max_size=25))
    # Two sources numbering their events alike: ids repeat, source and id never do.
    return [
        ev(t, d, event_id=f"p{i // 2}", time=time, source=f"urn:system-{i % 2}")
        for i, ((t, d), time) in enumerate(drawn)
    ]


def terminal_statuses(events: list[JobEvent]) -> set[str]:
    """The terminal statuses the events set (two of them: the Completed/Aborted conflict)."""
    found: set[str] = set()
    for event in events:
        if event.type is EventType.aborted:
            found.add("Aborted")
        status = getattr(event.data, "status", None)
        if event.type in (EventType.upserted, EventType.status_changed) and status:
            found.add(status)
    return found & {"Completed", "Aborted"}


def restamp(events: list[JobEvent], ranks: list[int]) -> list[JobEvent]:
    """The events with distinct times: event ``i`` at 10:00 plus ``ranks[i]`` microseconds."""
    return [
        e.replaced(time=at(0) + timedelta(microseconds=rank))
        for e, rank in zip(events, ranks, strict=True)
    ]


def distinct_exclusions(events: list[JobEvent]) -> list[JobEvent]:
    """The events with a different userId in each exclusion: equal exclusions of one time are
    one exclusion (a re-delivery), so restamping equal ones apart would add one."""
    return [
        e.replaced(data=e.data.model_copy(update={"user_id": f"u{i}"}))
        if e.type is EventType.excluded
        else e
        for i, e in enumerate(events)
    ]


def assemble(events: list[JobEvent]) -> JobState:
    """Apply in order; without the Completed/Aborted conflict nothing may be rejected."""
    state = reduce_all(events)
    assert state is not None
    assert state.version == len(events)
    return state


@st.composite
def with_duplicates(draw: st.DrawFn) -> tuple[list[JobEvent], list[JobEvent]]:
    events = draw(event_sequences())
    delivery = list(events)
    for _ in range(draw(st.integers(0, 15))):
        event = events[draw(st.integers(0, len(events) - 1))]
        first = next(i for i, e in enumerate(delivery) if e is event)
        delivery.insert(draw(st.integers(first + 1, len(delivery))), event)
    return events, delivery


class TestProperties:
    @given(with_duplicates())
    @settings(deadline=None)
    def test_duplicates_change_nothing(self, case: tuple[list[JobEvent], list[JobEvent]]) -> None:
        """Any interleaving of redelivered events gives the state of the sequence without them."""
        events, delivery = case
        assert reduce_all(delivery) == reduce_all(events)

    @given(with_duplicates())
    @settings(deadline=None)
    def test_a_redelivered_event_is_never_taken_for_another(
        self, case: tuple[list[JobEvent], list[JobEvent]]
    ) -> None:
        """Each redelivery of an event applied before returns the very state (never a
        Rejection for a reused id), whatever came between, through a changelog round trip
        too."""
        _, delivery = case
        state: JobState | None = None
        for event in delivery:
            if state is not None and seen_key(event) in state.seen_event_ids:
                assert apply(state, event, NOW) is state
                restored = decode_state(encode_state(state))
                assert apply(restored, event, NOW) is restored
                continue
            result = apply(state, event, NOW)
            if isinstance(result, JobState):
                state = result

    @given(event_sequences(), st.data())
    @settings(deadline=None)
    def test_prefix_replay(self, events: list[JobEvent], data: st.DataObject) -> None:
        """Replaying a prefix, then the whole sequence, gives the state of the whole."""
        cut = data.draw(st.integers(0, len(events)))
        assert reduce_all(events, reduce_all(events[:cut])) == reduce_all(events)

    @given(event_sequences(), st.data())
    @settings(deadline=None)
    def test_a_state_written_ahead_of_its_offsets_replays_exactly(
        self, events: list[JobEvent], data: st.DataObject
    ) -> None:
        """An intent writes a job's state after ``ahead`` events while the committed offsets
        stop after ``committed``; a crash restores that state and replays every event from
        the offsets on: the state of the whole sequence, as if nothing had been replayed."""
        committed = data.draw(st.integers(0, len(events)))
        ahead = data.draw(st.integers(committed, len(events)))
        written = reduce_all(events[:ahead])
        assume(written is not None)
        assert written is not None
        assert replays_as_duplicates(written)
        restored = decode_state(encode_state(written))
        assert reduce_all(events[committed:], restored) == reduce_all(events)

    def test_a_state_past_its_seen_ids_does_not_replay_as_duplicates(self) -> None:
        """Past the window, the first events' ids are gone: one of them replayed applies
        again with a new arrival number (and would win a tie it lost), so such a state is not
        written ahead of its offsets."""
        first = upsert(jobTitle="first")
        events = [first] + [upsert(jobTitle=f"t{n}") for n in range(SEEN_IDS_LIMIT)]
        state = run(*events)
        assert state.arrivals == SEEN_IDS_LIMIT + 1
        assert not replays_as_duplicates(state)
        assert seen_key(first) not in state.seen_event_ids
        assert apply(state, first, NOW) != state
        assert replays_as_duplicates(run(*events[:SEEN_IDS_LIMIT]))

    @given(event_sequences())
    @settings(deadline=None)
    def test_json_round_trip(self, events: list[JobEvent]) -> None:
        """Any reachable state survives the changelog JSON exactly (both readers), and the
        value compressed alone as the checkpoint writes it."""
        state = reduce_all(events)
        assert state is not None
        assert decode_state(encode_state(state)) == state
        assert decode_validated(encode_state(state)) == state
        assert decode_state(compressed(encode_state(state))) == state

    @given(event_sequences())
    @settings(deadline=None)
    def test_changelog_round_trip_is_identity(self, events: list[JobEvent]) -> None:
        """Encoding then decoding the changelog value of any state the events reach (and of
        every state on the way) gives that state, whose value encodes to the same bytes again,
        and whose request body is byte-equal to the body before the round trip (so its sha256
        decides alike after a restore)."""
        for state in states_on_the_way(events):
            value = encode_state(state)
            restored = decode_state(value)
            assert restored == state
            assert encode_state(restored) == value
            assert encode_body(restored) == encode_body(state)
            assert [s.json for s in restored.document.completed_steps] == [
                s.json for s in state.document.completed_steps
            ]

    @given(event_sequences())
    @settings(deadline=None)
    def test_a_settled_value_made_from_its_intents_parts_is_the_settled_state(
        self, events: list[JobEvent]
    ) -> None:
        """The checkpoint writes a settled state from its intent's value parts: that value
        reads back as the settled state and is the bytes of encoding it afresh; parts that do
        not fit a state (another document, clocks or key) are not used."""
        previous: ValueParts | None = None
        for state in states_on_the_way(events):
            intent = mark_sending(state, NOW)
            parts = value_parts(intent)
            assert parts.fits(intent)
            settled = mark_synced(intent, intent.version, "ab" * 32, "wfp-1", LATER)
            value = encode_state(settled, parts)
            assert value == encode_state(settled)
            assert decode_state(value) == settled
            if previous is not None and not previous.fits(settled):
                assert encode_state(settled, previous) == value
            previous = parts

    @given(event_sequences())
    @settings(deadline=None)
    def test_invariants(self, events: list[JobEvent]) -> None:
        """Steps stay sorted and unique; a terminal status, once reached, stays."""
        state: JobState | None = None
        terminal: str | None = None
        for event in events:
            result = apply(state, event, NOW)
            if isinstance(result, Rejection):
                assert terminal is not None
                continue
            state = result
            if terminal is not None:
                assert state.status == terminal
            elif is_terminal(state):
                terminal = state.status
            for steps in (state.document.completed_steps, state.document.cancelled_steps):
                assert list(steps) == sorted(steps, key=step_order)
                uids = [s.unique_step_id for s in steps]
                assert len(uids) == len(set(uids))

    @given(event_sequences(), st.data())
    @settings(deadline=None)
    def test_distinct_times_any_arrival_order_same_document(
        self, events: list[JobEvent], data: st.DataObject
    ) -> None:
        """With distinct times, any permutation of a set of events (without the
        Completed/Aborted conflict) assembles the same body, document and field clock times."""
        assume(len(terminal_statuses(events)) < 2)
        events = restamp(events, data.draw(st.permutations(range(len(events)))))
        shuffled = data.draw(st.permutations(events))
        first, second = assemble(events), assemble(shuffled)
        assert encode_body(second) == encode_body(first)
        assert second.document == first.document
        assert {p: c[0] for p, c in second.clocks.items()} == {
            p: c[0] for p, c in first.clocks.items()
        }

    @given(
        st.lists(
            st.tuples(_event_data, st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=25
        ),
        st.data(),
    )
    @settings(deadline=None)
    def test_topic_interleavings_same_document(
        self, drawn: list[tuple[tuple[EventType, dict[str, Any]], int, int]], data: st.DataObject
    ) -> None:
        """Events spread over three topics, each topic with its own times (same-time events
        only within one topic): every interleaving that keeps each topic's order assembles the
        same document as reading the topics one after the other."""
        topics: list[list[JobEvent]] = [[], [], []]
        for i, ((event_type, payload), topic, slot) in enumerate(drawn):
            topics[topic].append(ev(event_type, payload, f"p{i}", at(3 * slot + topic)))
        events = [e for topic in topics for e in topic]
        assume(len(terminal_statuses(events)) < 2)
        picks = data.draw(st.permutations([t for t, topic in enumerate(topics) for _ in topic]))
        cursors = [iter(topic) for topic in topics]
        interleaved = [next(cursors[t]) for t in picks]
        assert assemble(interleaved).document == assemble(events).document

    @given(event_sequences())
    @settings(deadline=None)
    def test_same_time_events_apply_in_offset_order(self, events: list[JobEvent]) -> None:
        """Events of one partition all carrying one time assemble exactly as if each had a
        later time than the one delivered before it."""
        assume(len(terminal_statuses(events)) < 2)
        events = distinct_exclusions(events)
        same = [e.replaced(time=at(1)) for e in events]
        increasing = restamp(events, list(range(len(events))))
        assert assemble(same).document == assemble(increasing).document

    @given(event_sequences(), st.data())
    @settings(deadline=None)
    def test_document_is_assembly_in_clock_order(
        self, events: list[JobEvent], data: st.DataObject
    ) -> None:
        """Whatever the ties and missing times, the document is the one the events assemble
        into when each carries its clock as a distinct time: (time, or the latest time before
        it; then arrival), in any order."""
        assume(len(terminal_statuses(events)) < 2)
        events = distinct_exclusions(events)
        latest, clocks = "", []
        for arrival, event in enumerate(events, 1):
            time = time_text(event.time) if event.time else latest
            clocks.append((time, arrival))
            latest = max(latest, time)
        ranks = sorted(range(len(events)), key=clocks.__getitem__)
        resolved = restamp(events, [ranks.index(i) for i in range(len(events))])
        shuffled = data.draw(st.permutations(resolved))
        assert assemble(shuffled).document == assemble(events).document

    @given(event_sequences(), st.data())
    @settings(deadline=None)
    def test_restore_continues_arrivals(self, events: list[JobEvent], data: st.DataObject) -> None:
        """A state restored from the changelog part way through continues as if it never left
        memory (arrival numbers and latest time included)."""
        cut = data.draw(st.integers(0, len(events)))
        head = reduce_all(events[:cut])
        restored = None if head is None else decode_state(encode_state(head))
        assert reduce_all(events[cut:], restored) == reduce_all(events)

    @given(
        st.integers(0, 2**32),
        st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
        st.data(),
    )
    @settings(deadline=None, max_examples=50)
    def test_demo_job_any_arrival_order(
        self, seed: int, variant: tuple[bool, bool], data: st.DataObject
    ) -> None:
        """Any arrival order of a demo job's events assembles the demo's expected body."""
        abort, exclude = variant
        events, expected = demo_job(random.Random(seed), "demo", abort=abort, exclude=exclude)
        assert body(assemble(data.draw(st.permutations(events)))) == expected

    @given(st.permutations(example_job_events()))
    @settings(deadline=None)
    def test_example_job_any_arrival_order(self, events: list[JobEvent]) -> None:
        """The documented example assembles into its body in any arrival order."""
        assert body(assemble(events)) == EXAMPLE_BODY


class TestChangelogValue:
    """The changelog value's layout: texts read back as written, whatever they hold."""

    @given(_step_data)
    @settings(deadline=None)
    def test_step_text_is_the_one_encoding(self, data: dict[str, Any]) -> None:
        """A step's kept text (pydantic's encoder) is what json_text writes for its values, so
        a text re-encoded after a read equals the text made at decode."""
        wrapper = StepWrapper.model_validate(data)
        assert step_text(wrapper) == json_text(wrapper.model_dump(mode="json", by_alias=True))

    def test_integers_beyond_64_bits_stay_exact(self) -> None:
        """orjson reads such integers as floats: a state holding one where the reader parses
        (hierarchyStack, a retractable currentStep) is written without the layout and read by
        the validating reader, exactly; one inside a step's text needs no parsing at all."""
        big = 2**70
        state = run(
            upsert(hierarchyStack=[big]),
            completed("u1", 1, values=[big]),
            status("Paused", currentStep=step("c", 2, values=[big])),
        )
        value = encode_state(state)
        assert not value.startswith(b'{"layout":')
        restored = decode_state(value)
        assert restored == state
        assert encode_body(restored) == encode_body(state)
        assert json.loads(encode_body(restored))["hierarchyStack"] == [big]
        laid_out = run(completed("u1", 1, values=[big]))
        assert encode_state(laid_out).startswith(b'{"layout":')
        assert decode_state(encode_state(laid_out)) == laid_out

    def test_layout_that_does_not_match_is_read_by_the_validating_reader(self) -> None:
        """A value whose layout lengths are off (edited by hand, say) is still read right."""
        state = run(completed("u1", 1), completed("u2", 2, note="x"))
        stored = json.loads(encode_state(state))
        stored["layout"]["completedSteps"][0][0] += 1
        assert decode_state(json.dumps(stored).encode()) == state
        compact = json.dumps(stored, separators=(",", ":"), ensure_ascii=False).encode()
        assert decode_state(compact) == state

    def test_layout_1_value_is_read_fast_and_written_as_layout_2(self) -> None:
        """A value of layout 1 (no version, clocks among the bookkeeping, as the previous
        version wrote it) is read by the fast reader, clocks parsed; written again it is of
        layout 2, which keeps layout 1's members as they were, so the previous version reads
        it too."""
        state = run(upsert(team="t", jobTitle="j"), completed("u1", 1), completed("u2", 2))
        text = encode_state(state).decode()
        end = text.index(',"client_job_id":')
        layout = json.loads(text[len('{"layout":') : end])
        assert layout["version"] == 2
        clocks_at = text.index(',"clocks":', end)
        clocks = text[clocks_at : clocks_at + len(',"clocks":') + layout.pop("clocks")]
        del layout["version"]
        head = text[end : text.index(',"document":')].replace(clocks, "")
        old = (
            '{"layout":'
            + json.dumps(layout, separators=(",", ":"))
            + head
            + clocks
            + text[text.index(',"document":') :]
        ).encode()
        with patch.object(state_codec, "decode_validated", side_effect=AssertionError):
            restored = decode_state(old)
        assert restored == state
        assert isinstance(restored.clocks, dict)
        assert encode_state(restored) == encode_state(state)

    def test_restored_clocks_are_read_on_first_use(self) -> None:
        """A restored state keeps its clocks as the value's text: written again unchanged, and
        read (as the reducer does at the next event) into the clocks written."""
        state = run(upsert(team="t"), completed("u1", 1), status("Paused"))
        value = encode_state(state)
        restored = decode_state(value)
        assert isinstance(restored.clocks, StoredClocks)
        assert encode_state(restored) == value
        assert dict(restored.clocks) == state.clocks
        later = run(upsert(team="later"), state=restored)
        assert later.clocks["team"][1] == state.arrivals + 1
        assert later.clocks["completedSteps.u1"] == state.clocks["completedSteps.u1"]

    def test_previous_value_is_read(self) -> None:
        """A value as the previous version wrote it (snake_case document, steps without their
        null fields, no layout) gives the state, the body and the step texts of today's."""
        state = run(
            upsert(workflowId="wf", metadata={"b": "2", "a": "1"}, team="t"),
            completed("u1", 1, stamp(1), note="n"),
            status("Paused", currentStep=step("c", 2)),
        )
        meta = state.document.metadata
        previous = {
            "client_job_id": JOB,
            "document": {
                "metadata": {
                    "client_job_id": JOB,
                    "workflow_id": "wf",
                    "metadata": {"a": "1", "b": "2"},
                    "status": "Paused",
                    "current_step": {"single_step": {"unique_step_id": "c", "step_number": 2}},
                },
                "completed_steps": [
                    {
                        "single_step": {
                            "unique_step_id": "u1",
                            "step_number": 1,
                            "completed": stamp(1),
                            "note": "n",
                        }
                    }
                ],
                "team": "t",
            },
            "version": 3,
            "seen_event_ids": list(state.seen_event_ids),
            "first_unsynced_at": NOW.isoformat().replace("+00:00", "Z"),
            "updated_at": NOW.isoformat().replace("+00:00", "Z"),
            "arrivals": 3,
            "latest_time": state.latest_time,
            "clocks": json.loads(encode_state(state))["clocks"],
            "retractable": {
                "currentStep": [
                    [
                        *state.retractable["currentStep"][0][:2],
                        {"single_step": {"unique_step_id": "c", "step_number": 2}},
                        True,
                    ]
                ]
            },
        }
        restored = decode_state(json.dumps(previous).encode())
        assert restored == state
        assert encode_body(restored) == encode_body(state)
        assert meta.current_step == restored.document.metadata.current_step


class TestTimeText:
    """Clocks written by every earlier version stay comparable with the ones written now."""

    @given(
        st.datetimes(timezones=st.one_of(st.none(), st.timezones(), st.just(UTC))),
    )
    def test_is_the_utc_strftime_text(self, moment: datetime) -> None:
        """The text is the UTC ``strftime`` text the clocks were first written with."""
        try:
            utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except OverflowError:
            assume(False)
        assert time_text(moment) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @given(st.datetimes(timezones=st.timezones()), st.datetimes(timezones=st.timezones()))
    def test_text_order_is_time_order(self, first: datetime, second: datetime) -> None:
        assume(first.year >= 1000 and second.year >= 1000)
        try:
            texts = time_text(first), time_text(second)
        except OverflowError:
            assume(False)
        assert (texts[0] < texts[1]) == (first < second)

    def test_pydantic_times_with_offsets(self) -> None:
        """An event's time as pydantic parses it (its own tzinfo), any offset."""
        parse = TypeAdapter(AwareDatetime).validate_json
        assert time_text(parse('"2026-01-01T10:00:00.5+02:00"')) == "2026-01-01T08:00:00.500000Z"
        assert time_text(parse('"2026-01-01T00:30:00-01:00"')) == "2026-01-01T01:30:00.000000Z"
        assert time_text(parse('"2026-01-01T10:00:00Z"')) == "2026-01-01T10:00:00.000000Z"
