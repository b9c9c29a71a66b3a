"""The basicSync request body (consumer.domain.basicsync)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings

from consumer.demo.example import example_job_events
from consumer.domain.basicsync import body_sha256, encode_body, encode_json, payload
from consumer.domain.events import EventType, JobEvent
from consumer.domain.job import JobState, apply, new_state
from consumer.testing.workfloplus.examples import docs_example_strict
from tests.unit.test_job import event_sequences, reduce_all

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def documented_body() -> dict[str, Any]:
    """The documentation's example body (its trailing comma removed: we send strict JSON)."""
    parsed: dict[str, Any] = json.loads(docs_example_strict())
    return parsed


def reduce(events: list[JobEvent]) -> JobState:
    state: JobState | None = None
    for event in events:
        result = apply(state, event, NOW)
        assert isinstance(result, JobState)
        state = result
    assert state is not None
    return state


def build_body(state: JobState) -> dict[str, Any]:
    """The request body of ``state`` as data (the one encoder's bytes, parsed)."""
    parsed: dict[str, Any] = json.loads(encode_body(state))
    return parsed


def event(event_type: EventType, data: dict[str, object], n: int) -> JobEvent:
    return JobEvent.build(
        {"id": f"e{n}", "source": "s", "type": event_type, "subject": "j", "data": data}
    )


class TestBuildBody:
    def test_documented_example(self) -> None:
        """The documented example, sent as events, builds exactly the documented body."""
        body = build_body(reduce(example_job_events()))
        assert body == documented_body()
        assert json.loads(encode_body(reduce(example_job_events()))) == documented_body()

    def test_key_order_follows_documentation(self) -> None:
        """Keys come in the documented order, at every level."""
        body = build_body(reduce(example_job_events()))
        expected = documented_body()
        assert list(body) == list(expected)
        assert list(body["metadata"]) == list(expected["metadata"])
        step = body["completedSteps"][0]["singleStep"]
        assert list(step) == list(expected["completedSteps"][0]["singleStep"])

    def test_every_field_null_when_unknown(self) -> None:
        """A fresh job has every documented field: null, empty exclusions, excluded false."""
        body = build_body(new_state("j", NOW))
        expected = documented_body()
        assert set(body) == set(expected)
        assert set(body["metadata"]) == set(expected["metadata"])
        assert body["metadata"]["clientJobId"] == "j"
        assert all(v is None for k, v in body["metadata"].items() if k != "clientJobId")
        assert body["completedSteps"] is None
        assert body["cancelledSteps"] is None
        assert body["jobExclusion"] == []
        assert body["excluded"] is False

    def test_partial_step_has_every_field(self) -> None:
        """A step sent with few fields is posted with all of them, null where unknown."""
        state = reduce([event(EventType.step_completed, {"singleStep": {"uniqueStepId": "u"}}, 1)])
        step = build_body(state)["completedSteps"][0]
        assert step["reportStep"] is None
        expected = documented_body()["completedSteps"][0]["singleStep"]
        assert set(step["singleStep"]) == set(expected)

    def test_steps_in_order(self) -> None:
        """Steps appear ordered by stepNumber whatever the arrival order."""
        events = [
            event(EventType.step_completed, {"singleStep": {"uniqueStepId": u, "stepNumber": n}}, n)
            for n, u in [(3, "c"), (1, "a"), (2, "b")]
        ]
        steps = build_body(reduce(events))["completedSteps"]
        assert [s["singleStep"]["uniqueStepId"] for s in steps] == ["a", "b", "c"]


class TestEncoding:
    def test_strict_compact_json(self) -> None:
        """The body is compact UTF-8 JSON with no whitespace between tokens."""
        state = reduce([event(EventType.upserted, {"jobTitle": "Prüfung", "team": "t"}, 1)])
        raw = encode_body(state)
        assert b", " not in raw
        assert b": " not in raw
        assert "Prüfung".encode() in raw
        assert json.loads(raw) == build_body(state)

    def test_deterministic(self) -> None:
        """Equal documents encode to equal bytes, whatever order the metadata keys merged in."""
        one = reduce(
            [
                event(EventType.upserted, {"metadata": {"a": "1"}}, 1),
                event(EventType.upserted, {"metadata": {"b": "2"}}, 2),
            ]
        )
        two = reduce(
            [
                event(EventType.upserted, {"metadata": {"b": "2"}}, 1),
                event(EventType.upserted, {"metadata": {"a": "1"}}, 2),
            ]
        )
        assert encode_body(one) == encode_body(two)

    def test_sha256(self) -> None:
        """body_sha256 is the hex SHA-256 of the bytes; payload pairs the two."""
        state = reduce(example_job_events())
        body, digest = payload(state)
        assert body == encode_body(state)
        assert digest == body_sha256(body) == hashlib.sha256(body).hexdigest()

    @given(event_sequences())
    @settings(deadline=None)
    def test_assembled_encoding_equals_whole_encoding(self, events: list[JobEvent]) -> None:
        """encode_body, composed from parts and kept step texts, gives exactly the bytes of
        encoding the whole body at once (canonical: what it parses to, encoded again), for any
        reachable state, twice over."""
        state = reduce_all(events)
        assert state is not None
        assert encode_body(state) == encode_json(build_body(state))
        assert encode_body(state) == encode_json(build_body(state))
