"""Forgotten jobs stay forgotten (consumer.domain.retention)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumer.domain.events import EventType, JobEvent
from consumer.domain.job import JobState, Rejection, apply, mark_synced
from consumer.domain.results import FailureReason
from consumer.domain.retention import (
    MARKER_PREFIX,
    ForgottenJob,
    Retention,
    apply_stored,
    decode_stored,
    encode_stored,
    forget,
    retention_action,
)
from consumer.domain.state_codec import encode_state

JOB = "job-r"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
_ids = iter(range(10**9))


def ev(event_type: EventType, data: dict[str, object]) -> JobEvent:
    return JobEvent.build(
        {
            "id": f"r{next(_ids)}",
            "source": "urn:test",
            "type": event_type,
            "subject": JOB,
            "data": data,
        }
    )


def finished(now: datetime = NOW, *, synced: bool = True) -> JobState:
    """A Completed job with a workflowId, settled at its last version when ``synced``."""
    state: JobState | None = None
    for event in (
        ev(EventType.upserted, {"workflowId": "wf", "jobTitle": "t"}),
        ev(EventType.step_completed, {"singleStep": {"uniqueStepId": "s1", "stepNumber": 1}}),
        ev(EventType.status_changed, {"status": "Completed"}),
    ):
        result = apply(state, event, now)
        assert isinstance(result, JobState)
        state = result
    assert state is not None
    if synced:
        state = mark_synced(state, state.version, "sha", "wp-1", now)
    return state


def action(stored: JobState | ForgottenJob, now: datetime) -> Retention:
    return retention_action(stored, now, retention=7 * DAY, forgotten_retention=30 * DAY)


class TestRetentionAction:
    def test_terminal_synced_idle_job_is_forgotten(self) -> None:
        """A terminal, settled job with no event for longer than the retention is forgotten,
        not before."""
        state = finished()
        assert action(state, NOW + 7 * DAY) is Retention.keep
        assert action(state, NOW + 7 * DAY + timedelta(seconds=1)) is Retention.forget

    def test_unsynced_or_open_jobs_are_kept(self) -> None:
        """A job WorkfloPlus does not hold yet, or one still open, is kept however old."""
        assert action(finished(synced=False), NOW + 365 * DAY) is Retention.keep
        open_job = apply(None, ev(EventType.upserted, {"workflowId": "wf"}), NOW)
        assert isinstance(open_job, JobState)
        assert action(open_job, NOW + 365 * DAY) is Retention.keep

    def test_marker_dropped_after_its_own_retention(self) -> None:
        """A marker is kept for the forgotten retention after it was written, then dropped."""
        marker = forget(finished(), NOW)
        assert action(marker, NOW + 30 * DAY - timedelta(seconds=1)) is Retention.keep
        assert action(marker, NOW + 30 * DAY) is Retention.drop


class TestMarker:
    def test_forget_keeps_what_must_survive(self) -> None:
        """The marker keeps the last version, the terminal status and WorkfloPlus's jobId."""
        state = finished()
        marker = forget(state, NOW + 8 * DAY)
        assert (marker.client_job_id, marker.version, marker.status, marker.job_id) == (
            JOB,
            state.version,
            "Completed",
            "wp-1",
        )
        assert marker.forgotten_at == NOW + 8 * DAY

    def test_late_event_rejected_as_job_forgotten(self) -> None:
        """Any event for a forgotten job is a job_forgotten rejection naming the version."""
        marker = forget(finished(), NOW)
        result = apply_stored(marker, ev(EventType.upserted, {"workflowId": "wf2"}), NOW)
        assert isinstance(result, Rejection)
        assert result.reason is FailureReason.job_forgotten
        assert "version 3" in result.message
        assert JOB in result.message

    def test_apply_stored_is_the_reducer_otherwise(self) -> None:
        """For a job state or no state, apply_stored is exactly apply."""
        event = ev(EventType.upserted, {"team": "x"})
        assert apply_stored(None, event, NOW) == apply(None, event, NOW)
        state = finished()
        assert apply_stored(state, event, NOW) == apply(state, event, NOW)

    @given(
        st.sampled_from(list(EventType)),
        st.sampled_from(
            [{}, {"status": "New"}, {"singleStep": {"uniqueStepId": "s9"}}, {"userId": "u"}]
        ),
    )
    @settings(deadline=None)
    def test_no_event_restarts_a_forgotten_job(
        self, event_type: EventType, data: dict[str, object]
    ) -> None:
        """Whatever valid event arrives, a forgotten key is never applied to, so its version
        never restarts while the marker lives."""
        try:
            event = ev(event_type, data)
        except ValidationError:
            return  # not a valid event of that type: never reaches the reducer
        marker = forget(finished(), NOW)
        result = apply_stored(marker, event, NOW + DAY)
        assert isinstance(result, Rejection)
        assert result.reason is FailureReason.job_forgotten


class TestChangelogValue:
    def test_marker_round_trip(self) -> None:
        """A marker's changelog value starts with its own prefix and reads back equal."""
        marker = forget(finished(), NOW)
        data = encode_stored(marker)
        assert data.startswith(MARKER_PREFIX)
        assert decode_stored(data) == marker

    def test_job_state_round_trip(self) -> None:
        """A job state's changelog value reads back as the same job state, also when its
        metadata map has a key named like the marker's field."""
        state = finished()
        assert decode_stored(encode_stored(state)) == state
        tricky = apply(state, ev(EventType.upserted, {"metadata": {"forgotten_at": "x"}}), NOW)
        assert isinstance(tricky, JobState)
        assert decode_stored(encode_state(tricky)) == tricky

    def test_marker_with_other_spacing(self) -> None:
        """A marker re-serialized by another tool (spaces, other key order) still reads."""
        marker = forget(finished(), NOW)
        text = json.dumps(dict(reversed(json.loads(marker.to_json_bytes()).items())), indent=1)
        assert decode_stored(text.encode()) == marker

    def test_neither_raises(self) -> None:
        """A value that is neither a job state nor a marker raises ValidationError."""
        with pytest.raises(ValidationError):
            decode_stored(b'{"something": 1}')
