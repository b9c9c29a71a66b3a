"""The WorkfloPlus job document's parts as pydantic models: what event data is validated with.

Field names mirror the documented body (camelCase aliases, snake_case attributes). Timestamps
are kept as the ISO-8601 strings the producer sent (validated, never reformatted), so the body
posted carries exactly the text of the events.

Used where bytes come in: event data (``events``) and older changelog values
(``state_schema``). A step becomes a ``consumer.domain.state.Step`` once, when its event is
decoded: the job state keeps its text (:func:`step_text`) and its order (:func:`order_of`).

Validation is strict (no coercion: ``"1"`` is not a step number) and unknown fields are
ignored: a producer may add fields before we know them, but they are never forwarded, as the
body must keep its documented shape.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

TERMINAL_STATUSES = frozenset({"Completed", "Aborted"})


def _check_timestamp(value: str) -> str:
    # Hot (every timestamp of every event and stored state): the parse alone, no wrapper.
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    return value


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 timestamp; a value without offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


#: An ISO-8601 timestamp kept as the original string.
Timestamp = Annotated[str, AfterValidator(_check_timestamp)]


def _check_finite(value: Any) -> Any:
    # JSON allows 1e400; pydantic reads it as an infinity (``allow_inf_nan`` does not reach
    # into JsonValue), which WorkfloPlus would get as null.
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is float:
            if not math.isfinite(item):
                raise ValueError("a number beyond the range of a double (it would be null)")
        elif type(item) is list:
            pending.extend(item)
        elif type(item) is dict:
            pending.extend(item.values())
    return value


#: Any JSON whose numbers a double holds.
FiniteJson = Annotated[JsonValue, AfterValidator(_check_finite)]


class DomainModel(BaseModel):
    """Base of every document and event model: frozen, strict, camelCase, extra ignored."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,  # a float field holds what JSON and WorkfloPlus can
    )


class SingleStep(DomainModel):
    """One executed step, as WorkfloPlus reports it."""

    values: list[FiniteJson] | None = None
    value_resource_ids: list[FiniteJson] | None = None
    unique_step_id: str | None = None
    previous_unique_step_id: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    device_id: str | None = None
    step_id: str | None = None
    step_number: int | None = None
    step_title: str | None = None
    step_description: str | None = None
    step_type: str | None = None
    connection_type: str | None = None
    started: Timestamp | None = None
    completed: Timestamp | None = None
    updated: Timestamp | None = None
    cancelled: Timestamp | None = None
    time_events: dict[str, int | float] | None = None
    note: str | None = None
    note_resource_filenames: list[FiniteJson] | None = None
    coordinates: FiniteJson = None
    parent_step_id: str | None = None
    parent_unique_step_id: str | None = None
    parent_step_title: str | None = None
    parent_step_description: str | None = None
    metadata: dict[str, FiniteJson] | None = None


class StepWrapper(DomainModel):
    """``{singleStep, reportStep}``: an entry of completedSteps / cancelledSteps, or currentStep."""

    single_step: SingleStep
    report_step: FiniteJson = None


class JobExclusion(DomainModel):
    """An entry of ``jobExclusion``: who excluded (or re-included) the job and why."""

    user_id: str = Field(min_length=1)
    reason: str | None = None
    is_excluded: bool


class JobMetadata(DomainModel):
    """The ``metadata`` object of the body. Every field may be unknown (None)."""

    client_job_id: str | None = None
    workflow_id: str | None = None
    workflow_version_id: str | None = None
    job_title: str | None = None
    metadata: dict[str, str] | None = None
    created: Timestamp | None = None
    updated: Timestamp | None = None
    modified: Timestamp | None = None
    status: str | None = None
    user_id: str | None = None
    current_step: StepWrapper | None = None
    abandon_reason: str | None = None
    username: str | None = None
    workflow_name: str | None = None


def step_text(wrapper: StepWrapper) -> str:
    """A step wrapper's JSON text as the body carries it: every field, camelCase, in order.

    pydantic's own encoder writes what :func:`~consumer.domain.state.json_text` writes for the
    dumped values (a property test holds them equal), in half the time.
    """
    return wrapper.model_dump_json(by_alias=True)


def order_of(wrapper: StepWrapper) -> tuple[bool, int, bool, float, str]:
    """Sort key: stepNumber, then time, then uniqueStepId; missing values sort last."""
    step = wrapper.single_step
    stamp = step.completed or step.cancelled or step.updated or step.started
    when = parse_timestamp(stamp) if stamp else None
    return (
        step.step_number is None,
        step.step_number or 0,
        when is None,
        when.timestamp() if when else 0.0,
        step.unique_step_id or "",
    )
