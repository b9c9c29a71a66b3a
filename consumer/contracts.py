"""Machine-readable topic contracts: JSON Schemas generated from the pydantic models.

``python -m consumer.contracts`` writes ``docs/contracts/*.schema.json``;
``python -m consumer.contracts --check`` exits 1 when the committed files differ (a unit test
does the same). ``docs/contracts/asyncapi.yaml`` is written by hand and points at these files;
CI validates it with the official AsyncAPI parser (``node tools/asyncapi/validate.mjs``).

Each schema describes the bytes on the wire, so the mode follows how the model is used:

- input events are *validated*: the schema is the structured-mode CloudEvent envelope the
  decoder accepts (one variant per ``type``; ``data`` in camelCase). In binary mode the value is
  the ``data`` of the same variant (``#/definitions/<Name>Data``).
- result records are *serialized* by alias (camelCase), every field written.
- job state (the changelog value, ``state_codec.encode_state``) is described by the model that
  reads it when the fast reader does not (``consumer.domain.state_schema.StoredJobState``):
  bookkeeping in snake_case, the document in the body's camelCase names (the reader accepts
  snake_case too), fields at their default left out. A forgotten job's changelog value is the
  marker (``ForgottenJob.to_json_bytes``).

The files are JSON Schema **draft-07**, the one JSON Schema draft that AsyncAPI 3 names as a
``schemaFormat`` (``application/schema+json;version=draft-07``) and that its official parser
validates. pydantic writes draft 2020-12, so :func:`_draft07` rewrites the three constructs it
uses that draft-07 lacks: ``$defs`` becomes ``definitions``, ``prefixItems`` (tuples) becomes
the array form of ``items``, and the OpenAPI-style ``discriminator`` object is dropped (it is no
JSON Schema keyword, and in an AsyncAPI schema ``discriminator`` must be a property name; the
``const`` of each variant's ``type`` already selects exactly one variant of the ``oneOf``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from consumer.domain import events
from consumer.domain.results import FailureRecord, SuccessRecord
from consumer.domain.retention import ForgottenJob
from consumer.domain.state_schema import StoredJobState

JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"
#: The AsyncAPI ``schemaFormat`` of these files (asyncapi.yaml names it on every payload).
SCHEMA_FORMAT = "application/schema+json;version=draft-07"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "contracts"


def _job_event() -> dict[str, Any]:
    # The decoder's own structured-mode union: exactly what is accepted on the input topics.
    return events._STRUCTURED.json_schema(mode="validation")


def _success() -> dict[str, Any]:
    return SuccessRecord.model_json_schema(mode="serialization", by_alias=True)


def _failure() -> dict[str, Any]:
    return FailureRecord.model_json_schema(mode="serialization", by_alias=True)


def _job_state() -> dict[str, Any]:
    return StoredJobState.model_json_schema(mode="serialization", by_alias=True)


def _forgotten_job() -> dict[str, Any]:
    return TypeAdapter(ForgottenJob).json_schema(mode="serialization")


#: file name -> (title, description, generator)
SCHEMAS: dict[str, tuple[str, str, Callable[[], dict[str, Any]]]] = {
    "job-event.schema.json": (
        "JobEvent",
        "A job event on an input topic: a CloudEvents 1.0 structured-mode envelope "
        "(Kafka key = subject = clientJobId). In binary mode the attributes are ce_* headers "
        "and the value is the data of the variant for its type.",
        _job_event,
    ),
    "success-record.schema.json": (
        "SuccessRecord",
        "A job state accepted by WorkfloPlus; on the succeeded topic, key = clientJobId.",
        _success,
    ),
    "failure-record.schema.json": (
        "FailureRecord",
        "A final failure or an unusable input event; on the failed topic, key = clientJobId "
        "(or the raw Kafka key of input that never decoded).",
        _failure,
    ),
    "job-state.schema.json": (
        "JobState",
        "One job as assembled so far plus its sync status; the value of the compacted state "
        "changelog, key = clientJobId (a forgotten job's value is a ForgottenJob marker, a "
        "null value is a tombstone).",
        _job_state,
    ),
    "forgotten-job.schema.json": (
        "ForgottenJob",
        "What the state changelog keeps of a job forgotten after retention (key = "
        "clientJobId), until the marker's own retention ends and the key is tombstoned: late "
        "events for it are rejected with job_forgotten.",
        _forgotten_job,
    ),
}


def generate() -> dict[str, str]:
    """File name -> file content (JSON, 2-space indent, trailing newline)."""
    files: dict[str, str] = {}
    for name, (title, description, build) in SCHEMAS.items():
        schema = _draft07(_public_names(build()))
        schema.pop("title", None)
        schema.pop("description", None)
        document = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": name,
            "title": title,
            "description": description,
            **schema,
        }
        files[name] = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return files


def _public_names(node: Any) -> Any:
    """Drop the leading underscore of private model names (``_UpsertedEnvelope``)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title" and isinstance(value, str):
                value = value.lstrip("_")
            out[key] = _public_names(value)
        if "$defs" in out:
            out["$defs"] = {k.lstrip("_"): v for k, v in out["$defs"].items()}
        return out
    if isinstance(node, list):
        return [_public_names(item) for item in node]
    if isinstance(node, str) and node.startswith("#/$defs/_"):  # $ref, discriminator mapping
        return "#/$defs/" + node.removeprefix("#/$defs/_")
    return node


def _draft07(node: Any, *, names: bool = False) -> Any:
    """Rewrite pydantic's draft 2020-12 output as the equivalent draft-07 schema.

    ``names`` marks a mapping whose keys are names (``properties``, ``$defs``), not keywords.
    """
    if isinstance(node, dict):
        if names:
            return {key: _draft07(value) for key, value in node.items()}
        out: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword == "discriminator" and isinstance(value, dict):
                continue
            if keyword == "items" and "prefixItems" in node:
                keyword = "additionalItems"
            renamed = _RENAMED.get(keyword, str(keyword))
            out[renamed] = _draft07(value, names=renamed in _NAME_MAPS)
        return out
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if isinstance(node, str) and node.startswith("#/$defs/"):  # $ref
        return "#/definitions/" + node.removeprefix("#/$defs/")
    return node


_RENAMED = {"$defs": "definitions", "prefixItems": "items"}
_NAME_MAPS = frozenset({"properties", "patternProperties", "definitions"})


def stale(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of files in ``directory`` that are missing or differ from :func:`generate`."""
    return [
        name
        for name, content in generate().items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != content
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.contracts", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if files are stale")
    args = parser.parse_args(argv)
    if args.check:
        names = stale(args.dir)
        for name in names:
            print(f"stale: {args.dir / name}", file=sys.stderr)
        return 1 if names else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, content in generate().items():
        (args.dir / name).write_text(content, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
