"""The basicSync request body: strict JSON in the documented shape.

The sandbox is strict on *structure* (known keys only, lists are lists, objects are objects,
strings are strings, ``metadata.clientJobId`` and ``metadata.workflowId`` present) because that
is what catches a consumer that leaks snake_case names or wrong types. It is lenient on *values*:
an unknown ``status`` string passes, and every documented field other than the two ids may be
absent or ``null``.

The models only validate; the sandbox stores the request's bytes themselves, so what a test
reads back is exactly what the client sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import pydantic_core
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypeAliasType

#: Any JSON value, but never NaN or Infinity: the JSON parser under ``model_validate_json``
#: accepts those tokens, strict JSON does not. Checked in Rust, so free-form fields stay cheap.
if TYPE_CHECKING:
    Json: TypeAlias = Any
else:
    Json = TypeAliasType(
        "Json",
        bool
        | int
        | Annotated[float, AllowInfNan(False)]
        | str
        | list["Json"]
        | dict[str, "Json"]
        | None,
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ReceivedStep(_Strict):
    values: list[Json] | None = None
    valueResourceIds: list[Json] | None = None
    uniqueStepId: str | None = None
    previousUniqueStepId: str | None = None
    userId: str | None = None
    userName: str | None = None
    deviceId: str | None = None
    stepId: str | None = None
    stepNumber: int | None = None
    stepTitle: str | None = None
    stepDescription: str | None = None
    stepType: str | None = None
    connectionType: str | None = None
    started: str | None = None
    completed: str | None = None
    updated: str | None = None
    cancelled: str | None = None
    timeEvents: dict[str, float] | None = None
    note: str | None = None
    noteResourceFilenames: list[str] | None = None
    coordinates: Json = None
    parentStepId: str | None = None
    parentUniqueStepId: str | None = None
    parentStepTitle: str | None = None
    parentStepDescription: str | None = None
    metadata: dict[str, Json] | None = None


class ReceivedStepWrapper(_Strict):
    singleStep: ReceivedStep | None = None
    reportStep: dict[str, Json] | None = None


class ReceivedMetadata(_Strict):
    clientJobId: str = Field(min_length=1)
    workflowId: str = Field(min_length=1)
    workflowVersionId: str | None = None
    jobTitle: str | None = None
    metadata: dict[str, str] | None = None
    created: str | None = None
    updated: str | None = None
    modified: str | None = None
    status: str | None = None
    userId: str | None = None
    currentStep: ReceivedStepWrapper | None = None
    abandonReason: str | None = None
    username: str | None = None
    workflowName: str | None = None


class ReceivedJob(_Strict):
    metadata: ReceivedMetadata
    completedSteps: list[ReceivedStepWrapper] | None = None
    cancelledSteps: list[ReceivedStepWrapper] | None = None
    team: str | None = None
    hierarchyStack: list[Json] | None = None
    packetIds: list[Json] | None = None
    jobExclusion: list[dict[str, Json]] | None = None
    excluded: bool | None = None


class BodyError(ValueError):
    """The body is not strict JSON or not the documented shape; ``str()`` says where and why."""


def parse_document(body: bytes) -> ReceivedJob:
    """Parse and validate a basicSync body in one pass; raise ``BodyError`` saying what is wrong.

    One pass straight from bytes into the models is the cheapest way to check ~300 fields (see
    ``tests/bench/bench_sandbox.py``); the sandbox keeps the bytes, not the models.
    """
    try:
        document = ReceivedJob.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            raise BodyError(f"body is not valid JSON: {errors[0]['msg']}") from None
        if any(error["type"] == "finite_number" for error in errors):
            raise BodyError("body is not valid JSON: NaN and Infinity are not JSON") from None
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['msg']}"
            for error in errors[:10]
        )
        raise BodyError(f"body is not a basicSync job document: {problems}") from None
    return document


def client_job_id_of(body: bytes) -> str | None:
    """Best-effort ``metadata.clientJobId`` of a body that failed validation, for recording
    and overlap counting."""
    try:
        document = pydantic_core.from_json(body)
    except ValueError:
        return None
    if isinstance(document, dict):
        metadata = document.get("metadata")
        if isinstance(metadata, dict):
            value = metadata.get("clientJobId")
            if isinstance(value, str):
                return value
    return None
