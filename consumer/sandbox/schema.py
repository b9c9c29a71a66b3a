"""The basicSync request body: strict JSON in the documented shape.

The sandbox is strict on *structure* (known keys only, lists are lists, objects are objects,
strings are strings, ``metadata.clientJobId`` and ``metadata.workflowId`` present) because that
is what catches a consumer that leaks snake_case names or wrong types. It is lenient on *values*:
an unknown ``status`` string passes, and every documented field other than the two ids may be
absent or ``null``.

The models only validate; the sandbox stores the parsed ``dict`` itself, so what a test reads
back is exactly what the client sent.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SingleStep(_Strict):
    values: list[Any] | None = None
    valueResourceIds: list[Any] | None = None
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
    coordinates: Any = None
    parentStepId: str | None = None
    parentUniqueStepId: str | None = None
    parentStepTitle: str | None = None
    parentStepDescription: str | None = None
    metadata: dict[str, Any] | None = None


class StepWrapper(_Strict):
    singleStep: SingleStep | None = None
    reportStep: dict[str, Any] | None = None


class JobMetadata(_Strict):
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
    currentStep: StepWrapper | None = None
    abandonReason: str | None = None
    username: str | None = None
    workflowName: str | None = None


class JobDocument(_Strict):
    metadata: JobMetadata
    completedSteps: list[StepWrapper] | None = None
    cancelledSteps: list[StepWrapper] | None = None
    team: str | None = None
    hierarchyStack: list[Any] | None = None
    packetIds: list[Any] | None = None
    jobExclusion: list[dict[str, Any]] | None = None
    excluded: bool | None = None


class BodyError(ValueError):
    """The body is not strict JSON or not the documented shape; ``str()`` says where and why."""


def parse_json(body: bytes) -> Any:
    """Parse strict JSON (no trailing commas, no NaN/Infinity); raise ``BodyError`` otherwise."""
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None


def validate_document(document: Any) -> dict[str, Any]:
    """Check ``document`` against the basicSync shape and return it unchanged."""
    try:
        JobDocument.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<body>'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:10]
        )
        raise BodyError(f"body is not a basicSync job document: {problems}") from None
    result: dict[str, Any] = document
    return result


def client_job_id_of(document: Any) -> str | None:
    """Best-effort ``metadata.clientJobId`` of any parsed body, for recording and overlap counts."""
    if isinstance(document, dict):
        metadata = document.get("metadata")
        if isinstance(metadata, dict):
            value = metadata.get("clientJobId")
            if isinstance(value, str):
                return value
    return None
