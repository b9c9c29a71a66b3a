"""CloudEvents decoding and encoding (consumer.domain.events)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.domain.document import JobExclusion, StepWrapper
from consumer.domain.events import (
    AbortedData,
    EventType,
    InvalidEvent,
    JobEvent,
    StatusChangedData,
    UpsertedData,
    decode_event,
    encode_binary,
    encode_structured,
)
from consumer.domain.results import FailureReason
from consumer.errors import BasicSyncError

JOB = "job-1"
TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

DATA: dict[EventType, dict[str, Any]] = {
    EventType.upserted: {"workflowId": "wf", "metadata": {"K": "V"}, "team": "t"},
    EventType.step_completed: {"singleStep": {"uniqueStepId": "u1", "stepNumber": 1}},
    EventType.step_cancelled: {
        "singleStep": {"uniqueStepId": "u2", "cancelled": "2026-01-01T00:00:00Z"}
    },
    EventType.status_changed: {"status": "Paused", "currentStep": None},
    EventType.excluded: {"userId": "me", "reason": "test", "isExcluded": True},
    EventType.aborted: {"reason": "gone"},
}


def make_event(event_type: EventType = EventType.upserted, **overrides: Any) -> JobEvent:
    fields: dict[str, Any] = {
        "id": "e1",
        "source": "urn:test",
        "type": event_type,
        "subject": JOB,
        "time": TIME,
        "data": DATA[event_type],
    }
    return JobEvent.build({**fields, **overrides})


def envelope(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "urn:test",
        "type": EventType.upserted.value,
        "subject": JOB,
        "data": {"workflowId": "wf"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()

BINARY_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e1"),
    ("ce_source", b"urn:test"),
    ("ce_type", EventType.upserted.value.encode()),
    ("ce_subject", JOB.encode()),
]


def decode_json(value: Any, key: bytes | None = JOB.encode(), **kw: Any) -> JobEvent:
    return decode_event(key, json.dumps(value).encode(), [], **kw)


def decode_step_values(values: str, *, binary: bool) -> JobEvent:
    """A step event whose ``values`` are the JSON text ``values``, as it stands."""
    data = f'{{"singleStep":{{"uniqueStepId":"u","values":{values}}}}}'.encode()
    step = EventType.step_completed.value
    if binary:
        headers = [*BINARY_HEADERS[:3], ("ce_type", step.encode()), BINARY_HEADERS[4]]
        return decode_event(JOB.encode(), data, headers)
    text = json.dumps(envelope(type=step, data={})).replace('"data": {}', '"data": ')
    return decode_event(JOB.encode(), text[:-1].encode() + data + b"}", [])


def decode_json_bytes(text: str) -> JobEvent:
    return decode_event(JOB.encode(), text.encode(), [])


def invalid(call: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        call()
    return caught.value


class TestStructuredMode:
    @pytest.mark.parametrize("event_type", list(EventType))
    def test_round_trip_each_type(self, event_type: EventType) -> None:
        """encode_structured then decode_event gives back an equal event, for every type."""
        event = make_event(event_type)
        key, value, headers = encode_structured(event)
        assert headers == [("content-type", b"application/cloudevents+json")]
        assert key == JOB.encode()
        assert decode_event(key, value, headers) == event

    def test_without_content_type(self) -> None:
        """A JSON envelope with specversion and no headers at all is read as structured."""
        event = decode_json(envelope())
        assert event.type is EventType.upserted
        assert isinstance(event.data, UpsertedData)
        assert event.data.workflow_id == "wf"
        assert event.time is None

    def test_unknown_attributes_and_fields_ignored(self) -> None:
        """Extension attributes and unknown data fields are ignored (forward compatibility)."""
        value = envelope(partitionkey="p1", data={"workflowId": "wf", "futureField": [1]})
        event = decode_json(value)
        assert event.data.model_fields_set == {"workflow_id"}

    def test_present_fields_tracked(self) -> None:
        """Which data fields were present (even as null) survives decoding: upserts need it."""
        event = decode_json(envelope(data={"jobTitle": None, "team": "a"}))
        assert event.data.model_fields_set == {"job_title", "team"}

    def test_time_parsed(self) -> None:
        """``time`` is parsed as an aware datetime."""
        event = decode_json(envelope(time="2026-01-01T12:00:00+01:00"))
        assert event.time == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)

    def test_content_type_with_parameters(self) -> None:
        """``application/cloudevents+json; charset=utf-8`` still selects structured mode."""
        value = json.dumps(envelope()).encode()
        headers = [("Content-Type", b"application/cloudevents+json; charset=utf-8")]
        assert decode_event(JOB.encode(), value, headers).id == "e1"


class TestBinaryMode:
    @pytest.mark.parametrize("event_type", list(EventType))
    def test_round_trip_each_type(self, event_type: EventType) -> None:
        """encode_binary then decode_event gives back an equal event, for every type."""
        event = make_event(event_type)
        key, value, headers = encode_binary(event)
        assert ("ce_type", event_type.value.encode()) in headers
        assert decode_event(key, value, headers) == event

    def test_minimal_headers(self) -> None:
        """Without ce_time or content-type the event decodes, with no time."""
        event = decode_event(JOB.encode(), b'{"workflowId":"wf"}', BINARY_HEADERS)
        assert event.time is None
        assert event.subject == JOB

    def test_header_names_case_insensitive(self) -> None:
        """``CE_ID`` works as well as ``ce_id``."""
        headers = [(k.upper(), v) for k, v in BINARY_HEADERS]
        assert decode_event(JOB.encode(), b"{}", headers).id == "e1"

    def test_cloudevents_content_type_wins(self) -> None:
        """content-type application/cloudevents+json means structured even with ce_ headers."""
        value = json.dumps(envelope(id="from-body")).encode()
        headers = [*BINARY_HEADERS, ("content-type", b"application/cloudevents+json")]
        assert decode_event(JOB.encode(), value, headers).id == "from-body"


class TestByteOrderMark:
    """A UTF-8 byte order mark before the JSON is ignored (RFC 8259 §8.1 lets a parser)."""

    BOM = b"\xef\xbb\xbf"

    @pytest.mark.parametrize("event_type", list(EventType))
    def test_structured_and_binary_values_read_as_without_it(self, event_type: EventType) -> None:
        event = make_event(event_type)
        for encode in (encode_structured, encode_binary):
            key, value, headers = encode(event)
            assert decode_event(key, self.BOM + value, headers) == event

    def test_a_mark_alone_is_an_empty_value_and_only_one_is_taken(self) -> None:
        assert "empty value" in str(invalid(lambda: decode_event(JOB.encode(), self.BOM, [])))
        value = self.BOM * 2 + json.dumps(envelope()).encode()
        assert invalid(lambda: decode_event(JOB.encode(), value, [])).reason is (
            FailureReason.invalid_event
        )


class TestInvalidEvents:
    def test_error_attributes(self) -> None:
        """InvalidEvent is a non-retriable BasicSyncError with a reason and a message."""
        error = invalid(lambda: decode_event(JOB.encode(), b"{", []))
        assert isinstance(error, BasicSyncError)
        assert error.retriable is False
        assert error.reason is FailureReason.invalid_event
        assert "JSON" in error.message

    @pytest.mark.parametrize(
        "value",
        [b"{", b"[]", b'"text"', b"\xff\xfe", b"null"],
        ids=["truncated", "array", "string", "not-utf8", "null"],
    )
    def test_not_a_json_object(self, value: bytes) -> None:
        """A value that is not a JSON object is invalid_event."""
        error = invalid(lambda: decode_event(JOB.encode(), value, []))
        assert error.reason is FailureReason.invalid_event

    @pytest.mark.parametrize("value", [None, b""])
    def test_empty_value(self, value: bytes | None) -> None:
        """A tombstone or empty value is invalid_event."""
        error = invalid(lambda: decode_event(JOB.encode(), value, []))
        assert error.reason is FailureReason.invalid_event

    @pytest.mark.parametrize("field", ["specversion", "id", "source", "type", "subject", "data"])
    def test_missing_required_attribute(self, field: str) -> None:
        """Each required attribute missing is invalid_event."""
        error = invalid(lambda: decode_json(envelope(**{field: _DROP})))
        assert error.reason is FailureReason.invalid_event

    @pytest.mark.parametrize(
        "overrides",
        [
            {"specversion": "0.3"},
            {"id": 7},
            {"id": ""},
            {"subject": ""},
            {"time": "yesterday"},
            {"time": "2026-01-01T12:00:00"},
            {"data": {"workflowId": 5}},
            {"data": {"metadata": {"K": 1}}},
            {"data": {"created": "not a time"}},
            {"data": "text"},
        ],
        ids=lambda o: json.dumps(o),
    )
    def test_wrong_values(self, overrides: dict[str, Any]) -> None:
        """Wrong types are never coerced: each is invalid_event."""
        error = invalid(lambda: decode_json(envelope(**overrides)))
        assert error.reason is FailureReason.invalid_event

    def test_step_number_not_coerced(self) -> None:
        """A step number sent as a string is invalid_event, not silently converted."""
        data = {"singleStep": {"uniqueStepId": "u", "stepNumber": "1"}}
        value = envelope(type=EventType.step_completed.value, data=data)
        error = invalid(lambda: decode_json(value))
        assert error.reason is FailureReason.invalid_event
        assert "stepNumber" in error.message

    def test_step_without_unique_step_id(self) -> None:
        """A step event must name its uniqueStepId."""
        value = envelope(type=EventType.step_completed.value, data={"singleStep": {}})
        assert invalid(lambda: decode_json(value)).reason is FailureReason.invalid_event

    def test_upsert_client_job_id_differs_from_subject(self) -> None:
        """data.clientJobId, when given, must equal the subject."""
        value = envelope(data={"clientJobId": "other"})
        assert invalid(lambda: decode_json(value)).reason is FailureReason.invalid_event

    def test_status_change_requires_status(self) -> None:
        """status.changed without a status is invalid_event."""
        value = envelope(
            type=EventType.status_changed.value, data={"updated": "2026-01-01T00:00:00Z"}
        )
        assert invalid(lambda: decode_json(value)).reason is FailureReason.invalid_event

    def test_unknown_type_structured(self) -> None:
        """An unknown type is unknown_event_type, and the message names it."""
        error = invalid(lambda: decode_json(envelope(type="com.example.other")))
        assert error.reason is FailureReason.unknown_event_type
        assert "com.example.other" in error.message

    def test_unknown_type_binary(self) -> None:
        """An unknown ce_type is unknown_event_type."""
        headers = [*BINARY_HEADERS[:3], ("ce_type", b"x"), BINARY_HEADERS[4]]
        error = invalid(lambda: decode_event(JOB.encode(), b"{}", headers))
        assert error.reason is FailureReason.unknown_event_type

    @pytest.mark.parametrize("drop", ["ce_id", "ce_source", "ce_type", "ce_subject"])
    def test_binary_missing_header(self, drop: str) -> None:
        """Each required ce_ header missing is invalid_event."""
        headers = [(k, v) for k, v in BINARY_HEADERS if k != drop]
        error = invalid(lambda: decode_event(JOB.encode(), b"{}", headers))
        assert error.reason is FailureReason.invalid_event
        assert drop in error.message

    @pytest.mark.parametrize(
        "headers",
        [
            [("ce_specversion", b"1.1"), *BINARY_HEADERS[1:]],
            [*BINARY_HEADERS, ("ce_time", b"noon")],
            [*BINARY_HEADERS, ("content-type", b"text/plain")],
            [*BINARY_HEADERS[:4], ("ce_subject", b"\xff")],
        ],
        ids=["specversion", "time", "content-type", "not-utf8"],
    )
    def test_binary_bad_headers(self, headers: list[tuple[str, bytes]]) -> None:
        """Bad ce_ headers or a non-JSON content-type are invalid_event."""
        error = invalid(lambda: decode_event(JOB.encode(), b"{}", headers))
        assert error.reason is FailureReason.invalid_event

    @pytest.mark.parametrize("time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
    @pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
    def test_time_beyond_the_utc_years(self, time: str, binary: bool) -> None:
        """A time that is no instant of the years 1 to 9999 in UTC is invalid_event: it could
        not be ordered (its UTC text would not exist), and the reducer must never meet it."""
        if binary:
            headers = [*BINARY_HEADERS, ("ce_time", time.encode())]
            error = invalid(lambda: decode_event(JOB.encode(), b"{}", headers))
        else:
            error = invalid(lambda: decode_json(envelope(time=time)))
        assert error.reason is FailureReason.invalid_event
        assert "outside the years 1 to 9999" in error.message

    @pytest.mark.parametrize("time", ["0001-01-01T01:00:00+01:00", "9999-12-31T22:59:59-01:00"])
    def test_time_at_the_edge_of_the_utc_years(self, time: str) -> None:
        assert decode_json(envelope(time=time)).time is not None

    @pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
    @pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
    def test_numbers_json_cannot_hold(self, number: str, binary: bool) -> None:
        """``NaN`` and the infinities are not JSON: invalid_event, not ``null`` posted."""
        error = invalid(lambda: decode_step_values(f"[1,{number}]", binary=binary))
        assert error.reason is FailureReason.invalid_event
        assert error.message.startswith(f"{number} is not JSON")

    @pytest.mark.parametrize(
        "number", ["1e400", "-1E+400", "12.5e0308", "1" + "0" * 250 + "e60", "-" + "9" * 400 + ".0"]
    )
    @pytest.mark.parametrize("binary", [False, True], ids=["structured", "binary"])
    def test_numbers_beyond_a_double(self, number: str, binary: bool) -> None:
        """JSON allows ``1e400``; a double cannot hold it, and pydantic reads it as an
        infinity that would reach WorkfloPlus as ``null``: invalid_event, naming where."""
        error = invalid(lambda: decode_step_values(f"[1,{number}]", binary=binary))
        assert error.reason is FailureReason.invalid_event
        assert "singleStep.values.1: Value error, a number beyond the range of a double" in (
            error.message
        )
        assert "0" * 50 not in error.message
        assert "9" * 50 not in error.message

    @pytest.mark.parametrize(
        "number", ["1e308", "-1.7976931348623157e308", "1e-400", "1" + "0" * 400, "1e99"]
    )
    def test_numbers_a_double_holds_or_rounds_are_read(self, number: str) -> None:
        """The largest doubles, an underflow (read as 0, as any rounding) and an integer of
        any length (kept exactly) are read as they are."""
        data = {"singleStep": {"uniqueStepId": "u", "values": ["8e123456", " 1e400"]}}
        text = json.dumps(envelope(type=EventType.step_completed.value, data=data))
        value = text.replace('"8e123456"', f'"8e123456", {number}').encode()
        event = decode_event(JOB.encode(), value, [])
        assert isinstance(event.data, StepWrapper)
        assert event.data.single_step.values == ["8e123456", json.loads(number), " 1e400"]

    @pytest.mark.parametrize(
        ("place", "data"),
        [
            ("timeEvents.t", {"timeEvents": {"t": "X"}}),
            ("metadata.m", {"metadata": {"m": {"deep": ["X"]}}}),
            ("coordinates", {"coordinates": {"lat": "X"}}),
            ("valueResourceIds.0", {"valueResourceIds": ["X"]}),
            ("noteResourceFilenames.0", {"noteResourceFilenames": ["X"]}),
        ],
    )
    def test_a_number_beyond_a_double_anywhere_in_a_step(
        self, place: str, data: dict[str, Any]
    ) -> None:
        step = {"singleStep": {"uniqueStepId": "u", **data}, "reportStep": {"r": [1.5]}}
        text = json.dumps(envelope(type=EventType.step_completed.value, data=step))
        error = invalid(lambda: decode_json_bytes(text.replace('"X"', "-2e999")))
        assert error.reason is FailureReason.invalid_event
        assert place in error.message, error.message
        assert "finite number" in error.message or "double" in error.message, error.message

    def test_a_number_beyond_a_double_in_the_report_step_and_the_hierarchy(self) -> None:
        step = {"singleStep": {"uniqueStepId": "u"}, "reportStep": {"r": [1.5, "X"]}}
        text = json.dumps(envelope(type=EventType.step_completed.value, data=step))
        error = invalid(lambda: decode_json_bytes(text.replace('"X"', "1e309")))
        assert "reportStep" in error.message
        assert "double" in error.message
        text = json.dumps(envelope(data={"hierarchyStack": [{"a": "X"}]}))
        error = invalid(lambda: decode_json_bytes(text.replace('"X"', "1e309")))
        assert "hierarchyStack" in error.message
        assert "double" in error.message

    def test_the_words_where_the_standard_parser_reads_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Should pydantic ever read a value holding ``NaN`` that the standard parser cannot,
        the value is refused, not passed on unchecked."""

        def unreadable(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("unreadable")

        monkeypatch.setattr("consumer.domain.events.json.loads", unreadable)
        data = {"singleStep": {"uniqueStepId": "u", "values": ["NaN"]}}
        value = json.dumps(envelope(type=EventType.step_completed.value, data=data)).encode()
        error = invalid(lambda: decode_event(JOB.encode(), value, []))
        assert error.message == "holds NaN or Infinity, and is not JSON the standard parser reads"

    def test_the_words_in_strings_are_text(self) -> None:
        """Text holding the words is text: such an event is read as any other."""
        data = {"jobTitle": "NaN and Infinity", "workflowId": "-Infinity"}
        assert decode_json(envelope(data=data)).data.model_dump(exclude_unset=True) == {
            "job_title": "NaN and Infinity",
            "workflow_id": "-Infinity",
        }

    def test_binary_bad_data(self) -> None:
        """Binary-mode data that does not validate is invalid_event."""
        error = invalid(lambda: decode_event(JOB.encode(), b'{"team":1}', BINARY_HEADERS))
        assert error.reason is FailureReason.invalid_event

    def test_batch_content_type(self) -> None:
        """application/cloudevents-batch+json is not supported: invalid_event."""
        headers = [("content-type", b"application/cloudevents-batch+json")]
        value = json.dumps(envelope()).encode()
        error = invalid(lambda: decode_event(JOB.encode(), value, headers))
        assert error.reason is FailureReason.invalid_event

    @pytest.mark.parametrize("key", [None, b"job-2", b"\xff"], ids=["none", "other", "not-utf8"])
    def test_key_mismatch(self, key: bytes | None) -> None:
        """A Kafka key missing, different from subject or not UTF-8 is key_mismatch."""
        error = invalid(lambda: decode_json(envelope(), key=key))
        assert error.reason is FailureReason.key_mismatch

    def test_key_mismatch_binary(self) -> None:
        """Key checks apply in binary mode too."""
        error = invalid(lambda: decode_event(b"job-2", b"{}", BINARY_HEADERS))
        assert error.reason is FailureReason.key_mismatch

    def test_oversized(self) -> None:
        """A value above max_bytes is oversized_event, before any parsing."""
        value = b"x" * 101
        error = invalid(lambda: decode_event(JOB.encode(), value, [], max_bytes=100))
        assert error.reason is FailureReason.oversized_event

    def test_at_limit_is_fine(self) -> None:
        """A value of exactly max_bytes is accepted."""
        value = json.dumps(envelope()).encode()
        assert decode_event(JOB.encode(), value, [], max_bytes=len(value)).id == "e1"

    def test_unknown_type_reported_before_key(self) -> None:
        """Checks run in a fixed order: the type is judged before the key."""
        error = invalid(lambda: decode_json(envelope(type="x"), key=b"other"))
        assert error.reason is FailureReason.unknown_event_type


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class TestTraceContext:
    """The CloudEvents Distributed Tracing extension, kept on the event as text."""

    def test_structured_attributes(self) -> None:
        """``traceparent`` and ``tracestate`` envelope attributes are kept as received."""
        event = decode_json(envelope(traceparent=TRACEPARENT, tracestate="vendor=1"))
        assert (event.traceparent, event.tracestate) == (TRACEPARENT, "vendor=1")

    def test_binary_headers(self) -> None:
        """``ce_traceparent`` / ``ce_tracestate`` headers (any case) are kept as received."""
        headers = [*BINARY_HEADERS, ("CE_TraceParent", TRACEPARENT.encode())]
        event = decode_event(JOB.encode(), b'{"workflowId": "wf"}', headers)
        assert (event.traceparent, event.tracestate) == (TRACEPARENT, None)

    def test_absent_is_none(self) -> None:
        """An event without the extension has no trace context, in either mode."""
        assert decode_json(envelope()).traceparent is None
        binary = decode_event(JOB.encode(), b'{"workflowId": "wf"}', BINARY_HEADERS)
        assert (binary.traceparent, binary.tracestate) == (None, None)

    @pytest.mark.parametrize("value", [42, None, {"a": 1}, ["x"]])
    def test_ill_typed_structured_attribute_is_dropped(self, value: Any) -> None:
        """A traceparent that is not a string never makes the event unusable: it is dropped."""
        event = decode_json(envelope(traceparent=value, tracestate=value))
        assert (event.traceparent, event.tracestate) == (None, None)
        assert event.data == UpsertedData(workflow_id="wf")

    def test_non_utf8_header_is_dropped(self) -> None:
        """A ``ce_traceparent`` header that is not UTF-8 is dropped, the event still used."""
        headers = [*BINARY_HEADERS, ("ce_traceparent", b"\xff\xfe")]
        assert decode_event(JOB.encode(), b'{"workflowId": "wf"}', headers).traceparent is None

    @pytest.mark.parametrize("encode", [encode_structured, encode_binary])
    def test_round_trip(self, encode: Any) -> None:
        """Both encoders write the extension so that decoding gives it back."""
        event = make_event(traceparent=TRACEPARENT, tracestate="a=b")
        key, value, headers = encode(event)
        assert decode_event(key, value, headers) == event


class TestJobEvent:
    def test_dict_data_validated_by_type(self) -> None:
        """A dict ``data`` becomes the model of the event's type."""
        cases = {
            EventType.upserted: UpsertedData,
            EventType.step_completed: StepWrapper,
            EventType.status_changed: StatusChangedData,
            EventType.excluded: JobExclusion,
            EventType.aborted: AbortedData,
        }
        for event_type, model in cases.items():
            assert type(make_event(event_type).data) is model

    def test_data_must_match_type(self) -> None:
        """A data model of another type is refused."""
        with pytest.raises(ValidationError):
            make_event(EventType.aborted, data=UpsertedData(team="x"))

    def test_frozen(self) -> None:
        """Events are immutable."""
        event = make_event()
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.id = "other"  # type: ignore[misc]

    def test_a_copy_with_other_data_keeps_the_step_of_its_own_data(self) -> None:
        """The step the job state keeps is made from ``data`` when the event is built: a copy
        with another step must carry that step, and a copy that is no step event none."""
        event = make_event(EventType.step_completed)
        other = StepWrapper.model_validate({"singleStep": {"uniqueStepId": "u2", "stepNumber": 9}})
        copy = event.replaced(data=other)
        assert event.step is not None
        assert copy.step is not None
        assert copy.step != event.step
        assert (copy.step.unique_step_id, copy.step.number) == ("u2", 9)
        assert copy.step == decode_event(*encode_structured(copy)).step
        assert event.replaced(type=EventType.upserted, data=UpsertedData(team="t")).step is None

    def test_a_copy_is_validated_as_a_built_event_is(self) -> None:
        event = make_event()
        with pytest.raises(ValidationError):
            event.replaced(subject="")
        with pytest.raises(ValidationError):
            event.replaced(type=EventType.aborted)  # upsert data under the abort type


class TestEncoding:
    def test_only_present_fields_encoded(self) -> None:
        """Producers send only the fields they set, so absent stays absent."""
        event = make_event(data={"team": None})
        _, value, _ = encode_structured(event)
        assert json.loads(value)["data"] == {"team": None}

    def test_binary_headers(self) -> None:
        """Binary mode carries every attribute as a ce_ header and JSON data as value."""
        _, value, headers = encode_binary(make_event())
        assert dict(headers) == {
            "ce_specversion": b"1.0",
            "ce_id": b"e1",
            "ce_source": b"urn:test",
            "ce_type": EventType.upserted.value.encode(),
            "ce_subject": JOB.encode(),
            "ce_time": b"2026-01-01T12:00:00Z",
            "content-type": b"application/json",
        }
        assert json.loads(value) == DATA[EventType.upserted]
