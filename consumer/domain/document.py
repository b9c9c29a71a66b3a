"""The WorkfloPlus job document: the models behind the basicSync body.

Field names mirror the documented body (camelCase aliases, snake_case attributes). Timestamps
are kept as the ISO-8601 strings the producer sent (validated, never reformatted), so the body
posted carries exactly the text of the events.

Shared by event data (``events``) and job state (``job``). Validation is strict (no coercion:
``"1"`` is not a step number) and unknown fields are ignored: a producer may add fields before
we know them, but they are never forwarded, as the body must keep its documented shape.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

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


_Model = TypeVar("_Model", bound=BaseModel)


def replace_fields(model: _Model, update: Mapping[str, Any]) -> _Model:
    """A copy of ``model`` with ``update`` set, unvalidated: ``model_copy(update=...)`` without
    its per-call ``copy.copy`` of every part, which the reducer would pay for the three models
    it copies per event. Only for models without extra or private attributes, and only with
    values of the field types, as nothing is checked.
    """
    copied = model.__class__.__new__(model.__class__)
    object.__setattr__(copied, "__dict__", {**model.__dict__, **update})
    object.__setattr__(
        copied, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(update)
    )
    object.__setattr__(copied, "__pydantic_extra__", None)
    object.__setattr__(copied, "__pydantic_private__", None)
    return copied


def construct(cls: type[_Model], fields: dict[str, Any]) -> _Model:
    """``cls.model_construct(**fields)`` for a value of every field, without its per-field
    default and alias handling, which every decoded event would pay for fields the decoder has
    already validated. Unvalidated, as :func:`replace_fields`, with the same limits.
    """
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(fields))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class TextCache(Generic[_Model]):
    """Text rendered from frozen models, each rendered once while it lives.

    Job states share their step objects from one event to the next, so encoding a state's
    steps again and again is mostly repeated work. Entries are by ``id`` and leave when their
    model is collected (the weakref callback runs before the id can be reused). Only for models
    no one mutates in place.
    """

    def __init__(self, render: Callable[[_Model], str]) -> None:
        self._render = render
        self._texts: dict[int, str] = {}
        # Kept so their callbacks fire; a plain weakref.ref with a callback, as
        # weakref.finalize costs far more per entry and one entry is made per step.
        self._refs: dict[int, weakref.ref[_Model]] = {}

    def __call__(self, model: _Model) -> str:
        key = id(model)
        text = self._texts.get(key)
        if text is None:
            text = self._render(model)
            self._texts[key] = text
            self._refs[key] = weakref.ref(model, functools.partial(self._forget, key))
        return text

    def _forget(self, key: int, _: object) -> None:
        self._texts.pop(key, None)
        self._refs.pop(key, None)

    def __contains__(self, model_id: int) -> bool:
        return model_id in self._texts


class DomainModel(BaseModel):
    """Base of every document and event model: frozen, strict, camelCase, extra ignored."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class SingleStep(DomainModel):
    """One executed step, as WorkfloPlus reports it."""

    values: list[JsonValue] | None = None
    value_resource_ids: list[JsonValue] | None = None
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
    note_resource_filenames: list[JsonValue] | None = None
    coordinates: JsonValue = None
    parent_step_id: str | None = None
    parent_unique_step_id: str | None = None
    parent_step_title: str | None = None
    parent_step_description: str | None = None
    metadata: dict[str, JsonValue] | None = None


class StepWrapper(DomainModel):
    """``{singleStep, reportStep}``: an entry of completedSteps / cancelledSteps, or currentStep."""

    single_step: SingleStep
    report_step: JsonValue = None


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


class JobDocument(DomainModel):
    """The whole assembled job. Empty step lists are posted as ``null`` (see ``basicsync``)."""

    metadata: JobMetadata = JobMetadata()
    completed_steps: tuple[StepWrapper, ...] = ()
    cancelled_steps: tuple[StepWrapper, ...] = ()
    team: str | None = None
    hierarchy_stack: list[JsonValue] | None = None
    packet_ids: list[str] | None = None
    job_exclusion: tuple[JobExclusion, ...] = ()
    excluded: bool = False
