"""The changelog value as a pydantic model: its published JSON Schema, and the validating reader.

:class:`StoredJobState` describes the value ``consumer.domain.state_codec`` writes and reads
every earlier form of it. It is made from ``JobState``'s fields, declaring only those stored in
another form. It is used for two things only: ``consumer.contracts`` publishes its schema, and
``consumer.domain.state_codec.decode_validated`` validates with it a value the fast reader does
not take (one written before the compact layout, during a rolling upgrade or at the first
restore after it) before making the plain state of it.

Earlier forms it accepts: the document in snake_case names (the reader takes both spellings),
steps without their null fields, a state written before clocks existed (no clocks), and one
written before arrival numbers existed (no ``arrivals``; clocks were ``(time, event id)``,
grouped as ``"<time> <id>"`` or earlier ``path: [time, id]``), whose writes are read as arrival
0. Unknown fields are ignored, so a value written by a newer version is read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Annotated, Any, get_type_hints

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    ValidationInfo,
    create_model,
)

from consumer.domain.document import DomainModel, JobExclusion, JobMetadata, StepWrapper
from consumer.domain.state import Clock, JobState


def group_clocks(clocks: Mapping[str, Clock]) -> dict[str, list[str]]:
    """Stored form of :attr:`JobState.clocks`: ``"<time> <arrival>"`` -> the paths it holds.

    One event usually writes many fields (a first upsert about 15), so this is about a third
    smaller than one ``[time, arrival]`` per path. Ordered by clock, paths sorted: equal states
    give equal bytes.
    """
    by_clock: dict[Clock, list[str]] = {}
    for path, clock in clocks.items():  # group first: sorting ~13 clocks beats ~40 paths
        by_clock.setdefault(clock, []).append(path)
    return {f"{clock[0]} {clock[1]}": sorted(by_clock[clock]) for clock in sorted(by_clock)}


def _legacy(info: ValidationInfo) -> bool:
    """The state was written before arrival numbers: its clocks are ``(time, event id)``.

    Every state written since has ``arrivals >= 1`` as soon as it holds a clock.
    """
    return not info.data.get("arrivals")


def _ungroup_clocks(value: Any, info: ValidationInfo) -> Any:
    """Read the stored form back (see ``group_clocks``), and the older forms."""
    if not isinstance(value, dict):
        return value
    clocks: dict[str, Any] = {}
    if not _legacy(info):
        for key, paths in value.items():
            time, _, arrival = str(key).rpartition(" ")
            clocks.update((path, (time, int(arrival))) for path in paths)
        return clocks
    # Before arrival numbers: grouped as ``"<time> <id>"`` (a key starting with a digit; paths
    # never do), or earlier ``path: [time, id]``. Their writes count as arrival 0.
    for key, item in value.items():
        if isinstance(key, str) and key[:1].isdigit() and isinstance(item, list | tuple):
            clocks.update((path, (key.partition(" ")[0], 0)) for path in item)
        elif isinstance(item, list | tuple) and item:
            clocks[key] = (item[0], 0)
        else:
            clocks[key] = item
    return clocks


# The readers below also turn JSON arrays into tuples: after a before-validator, strict
# validation no longer accepts a list for a tuple.


def _read_clock(value: Any, legacy: bool) -> Any:
    if isinstance(value, list | tuple) and len(value) == 2:
        return (value[0], 0) if legacy else tuple(value)
    return value


def _read_terminal_clock(value: Any, info: ValidationInfo) -> Any:
    return _read_clock(value, _legacy(info))


def _read_exclusion_clocks(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, list | tuple):
        legacy = _legacy(info)
        return tuple(_read_clock(clock, legacy) for clock in value)
    return value


def _read_candidate(value: Any, legacy: bool) -> Any:
    if isinstance(value, list | tuple) and len(value) == 4:
        return (value[0], 0, *value[2:]) if legacy else tuple(value)
    return value


def _read_retractable(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, dict):
        return value
    legacy = _legacy(info)
    return {
        path: tuple(_read_candidate(w, legacy) for w in writes)
        if isinstance(writes, list | tuple)
        else writes
        for path, writes in value.items()
    }


#: Field path -> clock, stored grouped by clock (see ``group_clocks``).
FieldClocks = Annotated[
    dict[str, Clock],
    BeforeValidator(_ungroup_clocks),
    PlainSerializer(group_clocks, return_type=dict[str, list[str]]),
]
#: A write kept while a field may fall back: ``[time, arrival, value, retractable]``; the value
#: of a ``currentStep`` write is the step wrapper object.
StoredCandidate = tuple[str, int, JsonValue, bool]


class StoredDocument(DomainModel):
    """The assembled job, in the body's names (snake_case names are read too)."""

    team: str | None = None
    hierarchy_stack: list[JsonValue] | None = None
    packet_ids: list[str] | None = None
    job_exclusion: tuple[JobExclusion, ...] = ()
    excluded: bool = False
    #: Written last but for ``currentStep``, which follows the other fields.
    metadata: JobMetadata = JobMetadata()
    completed_steps: tuple[StepWrapper, ...] = ()
    cancelled_steps: tuple[StepWrapper, ...] = ()


class StoredLayout(DomainModel):
    """Where the texts at the end of the value are: lengths (characters) and ordering keys."""

    version: int = Field(default=1, description="the layout's version (absent: 1)")
    current_step: int = Field(description="length of metadata.currentStep's text (null: 4)")
    clocks: int = Field(
        default=0,
        description="length of the clocks' text, right after client_job_id (0: none; absent in "
        "layout 1, whose clocks stand among the bookkeeping)",
    )
    completed_steps: list[tuple[int, int | None, float | None, str]] = Field(
        description="per completed step: [text length, stepNumber, time (POSIX), uniqueStepId]"
    )
    cancelled_steps: list[tuple[int, int | None, float | None, str]] = Field(
        description="per cancelled step, as completedSteps"
    )


class _StoredJobStateBase(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")


#: The fields the changelog stores in another form than the state holds them, with their
#: readers; every other field of ``JobState`` is stored as the state holds it. ``JobState`` is
#: the one list of the fields: the model below is made from it.
_STORED_AS: dict[str, tuple[Any, Any]] = {
    "clocks": (FieldClocks, {}),
    "terminal_clock": (Annotated[Clock | None, BeforeValidator(_read_terminal_clock)], None),
    "exclusion_clocks": (
        Annotated[tuple[Clock, ...], BeforeValidator(_read_exclusion_clocks)],
        (),
    ),
    "retractable": (
        Annotated[dict[str, tuple[StoredCandidate, ...]], BeforeValidator(_read_retractable)],
        {},
    ),
    # Written last, after the bookkeeping; its texts end the value.
    "document": (StoredDocument, ...),
}


def _stored_fields() -> dict[str, Any]:
    """The changelog value's fields: the layout first, then ``JobState``'s in its order
    (``arrivals`` before the clocks, whose reading depends on it), the document last."""
    hints = get_type_hints(JobState)
    stored: dict[str, Any] = {
        "layout": (
            StoredLayout | None,
            Field(
                default=None,
                description="first member: the texts at the end of the value, so a reader "
                "can take them without parsing them (absent in values written before it)",
            ),
        )
    }
    for held in fields(JobState):
        default = ... if held.default is MISSING else held.default
        stored[held.name] = _STORED_AS.get(held.name, (hints[held.name], default))
    stored["document"] = stored.pop("document")
    return stored


#: One job as assembled so far plus its sync status: the changelog value.
StoredJobState: type[BaseModel] = create_model(
    "StoredJobState", __base__=_StoredJobStateBase, **_stored_fields()
)
