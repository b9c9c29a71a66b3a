"""Whatever bytes arrive, the intake reports or applies them, and what it keeps can be posted.

Generated events use the contract's field names with values of every JSON kind, edge times
(years 1 and 9999, offsets up to a day), integers past 64 bits, non-finite numbers and strings
of any code point, in both CloudEvents modes and mixed with bytes that are not events at all.
An event whose time the reducer could not order (before the year 1 in UTC) once stopped the
consumer at every restart; this is the test that would have found it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from consumer.domain.basicsync import encode_body
from consumer.domain.document import JobExclusion, SingleStep
from consumer.domain.events import AbortedData, EventType, StatusChangedData, UpsertedData
from consumer.domain.state_codec import decode_state, encode_state
from consumer.intake import ArrivalClock, absorb
from consumer.kafka.partitioning import hashes_to
from consumer.kafka.records import PlainRecord
from consumer.state.store import JobStore

PARTITIONS = 3
JOBS = ("job-a", "job-b")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


times = st.sampled_from(
    # the first and last instants, in the zones furthest from UTC
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", "0001-01-01T00:00:00-00:30"]
) | st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from([1, 2, 1970, 2026, 9998, 9999]),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".5", ".123456", ".1234567891"]),
    st.sampled_from(["Z", "+00:00", "+14:00", "-14:00", "+23:59", "-23:59", ""]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    times,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def _typed(annotation: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values of a field's type (most events pass validation and reach the reducer)."""
    if "_check_timestamp" in annotation:
        return times | st.none()
    if "JsonValue" in annotation:
        return json_values
    if annotation.startswith("dict[str, int | float]"):
        return st.dictionaries(st.text(max_size=4), st.integers(-(2**70), 2**70) | st.floats())
    if annotation.startswith("dict[str, str]"):
        return st.dictionaries(st.text(max_size=4), st.text(max_size=4)) | st.none()
    if annotation.startswith("list[str]"):
        return st.lists(st.text(max_size=4), max_size=3) | st.none()
    if annotation.startswith("int"):
        return st.integers(-(2**70), 2**70) | st.none()
    if "bool" in annotation:
        return st.booleans()
    if "StepWrapper" in annotation:
        return _step(values) | st.none()
    return st.text(max_size=8) | st.none()


def _data(model: type[BaseModel], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Some of ``model``'s fields by their JSON names, each of its type or, now and then, of
    any type at all."""
    fields = {
        field.alias or name: st.one_of(_typed(str(field.annotation), values), values)
        if name != "single_step"
        else _single(values)
        for name, field in model.model_fields.items()
    }
    return st.lists(st.sampled_from(sorted(fields)), max_size=6, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: fields[name] for name in names})
    )


def _single(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return _data(SingleStep, values).map(
        lambda d: {**d, "uniqueStepId": d.get("uniqueStepId") or "u1"}
    )


def _step(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"singleStep": _single(values)}, optional={"reportStep": values})


_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.upserted: UpsertedData,
    EventType.status_changed: StatusChangedData,
    EventType.excluded: JobExclusion,
    EventType.aborted: AbortedData,
}


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A CloudEvent of any of the six types whose fields take values of their type or, now
    and then, of any other."""
    values = st.one_of(scalars, json_values)
    event_type = draw(st.sampled_from(list(EventType)))
    if event_type in (EventType.step_completed, EventType.step_cancelled):
        data: Any = draw(_step(values))
    else:
        data = draw(_data(_MODELS[event_type], values))
        if event_type is EventType.status_changed:
            data.setdefault("status", "S")
        if event_type is EventType.excluded:
            data.setdefault("userId", "u")
            data.setdefault("isExcluded", True)
    envelope = {
        "specversion": "1.0",
        "id": draw(st.text(min_size=1, max_size=3)),
        "source": "fuzz",
        "type": event_type.value,
        "subject": draw(st.sampled_from(JOBS)),
        "data": data,
    }
    if draw(st.booleans()):
        envelope["time"] = draw(times)
    return envelope


def _binary(envelope: dict[str, Any]) -> tuple[bytes, tuple[tuple[str, bytes | None], ...]]:
    headers = tuple(
        (f"ce_{name}", str(envelope[name]).encode())
        for name in ("specversion", "id", "source", "type", "subject", "time")
        if name in envelope
    )
    return json.dumps(envelope["data"]).encode(), headers


@st.composite
def records(draw: st.DrawFn) -> list[PlainRecord]:
    found: list[PlainRecord] = []
    for offset in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["structured", "binary", "bytes"]))
        if kind == "bytes":
            key: bytes | None = draw(st.sampled_from([b"job-a", b"\xff", None]))
            value: bytes | None = draw(st.binary(max_size=40) | st.none())
            headers: tuple[tuple[str, bytes | None], ...] = ()
        else:
            envelope = draw(envelopes())
            key = envelope["subject"].encode()
            if kind == "binary":
                value, headers = _binary(envelope)
            else:
                value, headers = json.dumps(envelope).encode(), ()
        partition = hashes_to(key, PARTITIONS) if key is not None else 0
        found.append(PlainRecord("in", partition, offset, key, value, headers))
    return found


class TestHostileInput:
    @given(records())
    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    def test_every_record_is_applied_or_reported_and_every_state_posts(
        self, batch: list[PlainRecord]
    ) -> None:
        """No record raises out of the intake; each is applied, a duplicate, or one failure
        record; every state kept encodes a body that is strict JSON, and reads back from its
        changelog value with the same body."""
        store = JobStore()
        effect = absorb(
            store,
            batch,
            clock=ArrivalClock(lambda: NOW),
            partition_count=PARTITIONS,
            max_event_bytes=100_000,
        )
        assert effect.applied + effect.duplicates + len(effect.failures) == len(batch)
        event(f"applied {min(effect.applied, 3)}+")
        for failure in effect.failures:
            assert failure.error.message
        for state in effect.changed.values():
            body = encode_body(state)
            json.loads(body, parse_constant=_refuse)  # no NaN or Infinity reaches WorkfloPlus
            assert encode_body(decode_state(encode_state(state))) == body


def _refuse(constant: str) -> None:
    raise AssertionError(f"the body holds {constant}, which is not JSON")
