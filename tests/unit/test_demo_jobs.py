"""Demo job streams (consumer.demo.jobs) and the documented example (consumer.demo.example)."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from consumer.demo.example import EXAMPLE_BODY, example_job_events
from consumer.demo.jobs import demo_job
from consumer.domain.basicsync import encode_body
from consumer.domain.events import (
    EventType,
    JobEvent,
    decode_event,
    encode_binary,
    encode_structured,
)
from consumer.domain.job import JobState, apply

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def body_of(state: JobState) -> Any:
    """The request body of ``state`` as data."""
    return json.loads(encode_body(state))


def reduce(events: list[JobEvent]) -> JobState:
    state: JobState | None = None
    for event in events:
        result = apply(state, event, NOW)
        assert isinstance(result, JobState), result
        state = result
    assert state is not None
    return state


class TestDemoJob:
    @pytest.mark.parametrize(("abort", "exclude"), [(False, False), (True, False), (False, True)])
    def test_events_build_expected_body(self, abort: bool, exclude: bool) -> None:
        """For many seeds, the events reduce to exactly the expected body."""
        rng = random.Random(42)
        for i in range(100):
            events, body = demo_job(rng, f"job-{i}", abort=abort, exclude=exclude)
            assert body_of(reduce(events)) == body

    def test_survives_both_wire_modes(self) -> None:
        """Encoded and decoded in either CloudEvents mode, the events still build the body."""
        rng = random.Random(7)
        for i in range(50):
            events, body = demo_job(rng, f"job-{i}")
            encode = encode_structured if i % 2 else encode_binary
            decoded = [decode_event(*encode(e)) for e in events]
            assert decoded == events
            assert body_of(reduce(decoded)) == body

    @pytest.mark.parametrize(("abort", "exclude"), [(False, False), (True, False), (False, True)])
    def test_times_strictly_increase(self, abort: bool, exclude: bool) -> None:
        """Event times strictly increase within a job, so the expected body (written in event
        order) is the time-ordered assembly the reducer converges to in any arrival order."""
        rng = random.Random(13)
        for i in range(200):
            events, _ = demo_job(rng, f"job-{i}", abort=abort, exclude=exclude)
            times = [e.time for e in events if e.time is not None]
            assert len(times) == len(events)
            assert all(a < b for a, b in pairwise(times)), i

    def test_reversed_arrival_builds_expected_body(self) -> None:
        """Delivered newest first (as from topics read in any relative order), the events still
        build the expected body."""
        rng = random.Random(17)
        for i in range(50):
            events, body = demo_job(rng, f"job-{i}", abort=i % 3 == 1, exclude=i % 3 == 2)
            assert body_of(reduce(events[::-1])) == body

    def test_deterministic(self) -> None:
        """The same seed gives the same events and body."""
        assert demo_job(random.Random(3), "j") == demo_job(random.Random(3), "j")

    def test_realistic_shape(self) -> None:
        """About a dozen events: an upsert first, steps, completion last; ids unique."""
        events, body = demo_job(random.Random(5), "j", steps=10)
        assert 12 <= len(events) <= 16
        assert events[0].type is EventType.upserted
        assert events[-1].type is EventType.status_changed
        assert len({e.id for e in events}) == len(events)
        assert all(e.subject == "j" for e in events)
        assert body["metadata"]["status"] == "Completed"
        assert len(body["completedSteps"]) == 10

    def test_variants(self) -> None:
        """abort ends Aborted with a reason; exclude adds an exclusion; some jobs cancel a step."""
        rng = random.Random(11)
        aborted = demo_job(rng, "a", abort=True)[1]
        assert aborted["metadata"]["status"] == "Aborted"
        assert aborted["metadata"]["abandonReason"]
        excluded = demo_job(rng, "x", exclude=True)[1]
        assert excluded["excluded"] is True
        assert len(excluded["jobExclusion"]) == 1
        kinds: Counter[EventType] = Counter()
        for i in range(30):
            kinds.update(e.type for e in demo_job(rng, f"j{i}")[0])
        assert kinds[EventType.step_cancelled] > 0

    def test_steps_parameter(self) -> None:
        """``steps`` sets how many steps a completed job has."""
        body = demo_job(random.Random(1), "j", steps=3)[1]
        assert len(body["completedSteps"]) == 3


class TestExampleJob:
    def test_builds_documented_body(self) -> None:
        """example_job_events assembles into the documented example body."""
        assert body_of(reduce(example_job_events())) == EXAMPLE_BODY

    def test_times_strictly_increase(self) -> None:
        """The example events are in time order, so any arrival order builds the same body."""
        events = example_job_events()
        times = [e.time for e in events if e.time is not None]
        assert len(times) == len(events)
        assert all(a < b for a, b in pairwise(times))

    def test_ids_stable(self) -> None:
        """The example events have fixed ids, so re-sending them is a duplicate."""
        assert [e.id for e in example_job_events()] == [e.id for e in example_job_events()]
