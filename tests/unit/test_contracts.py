"""Topic contracts: docs/contracts/*.schema.json (generated) and asyncapi.yaml (by hand)."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from consumer import contracts
from consumer.config import KafkaSettings, TopicSettings
from consumer.demo.jobs import demo_job
from consumer.domain.events import encode_binary, encode_structured
from consumer.domain.job import JobState, apply, new_state
from consumer.domain.results import (
    FailureReason,
    FailureRecord,
    SourceInfo,
    SourceOffset,
    SuccessRecord,
)
from consumer.domain.retention import ForgottenJob
from consumer.domain.state_codec import encode_state

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONTRACTS = DOCS / "contracts"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONTRACTS / name).read_text(encoding="utf-8"))
    return loaded


def _validator(name: str) -> jsonschema.Draft7Validator:
    schema = _schema(name)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def _asyncapi() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CONTRACTS / "asyncapi.yaml").read_text("utf-8"))
    return loaded


def _pointer(document: Any, fragment: str) -> Any:
    node = document
    for part in [p for p in fragment.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def _demo_events() -> list[Any]:
    events, _ = demo_job(random.Random(7), "job-contract-1", steps=3, exclude=True)
    aborted, _ = demo_job(random.Random(8), "job-contract-2", steps=2, abort=True)
    return events + aborted


class TestGeneratedSchemas:
    def test_committed_files_are_generated(self) -> None:
        """docs/contracts/*.schema.json equal `python -m consumer.contracts` output (no drift)."""
        assert contracts.stale(CONTRACTS) == [], "regenerate: python -m consumer.contracts"
        committed = {p.name for p in CONTRACTS.glob("*.schema.json")}
        assert committed == set(contracts.generate())

    def test_check_mode_reports_stale(self, tmp_path: Path) -> None:
        """--check exits 1 for a missing or edited file and 0 once regenerated."""
        assert contracts.main(["--check", "--dir", str(tmp_path)]) == 1
        assert contracts.main(["--dir", str(tmp_path)]) == 0
        assert contracts.main(["--check", "--dir", str(tmp_path)]) == 0
        (tmp_path / "job-state.schema.json").write_text("{}", encoding="utf-8")
        assert contracts.stale(tmp_path) == ["job-state.schema.json"]

    @pytest.mark.parametrize("name", sorted(contracts.SCHEMAS))
    def test_valid_json_schema(self, name: str) -> None:
        """Each file is a valid draft-07 schema with its own $id, and uses no keyword of a
        later draft (draft-07 validators would silently ignore those) nor OpenAPI's
        discriminator object (the AsyncAPI parser rejects it)."""
        schema = _schema(name)
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["$id"] == name
        text = json.dumps(schema)
        for later in ('"$defs"', '"prefixItems"', '"discriminator"', '"unevaluated', '"$anchor"'):
            assert later not in text, later
        assert all(r.startswith("#/definitions/") for r in _refs(schema))
        assert not [r for r in _refs(schema) if "/definitions/_" in r]


class TestDraft07:
    def test_tuples_become_item_arrays(self) -> None:
        """prefixItems becomes the array form of items; a trailing items becomes
        additionalItems, so a tuple schema keeps its meaning under draft-07."""
        schema = {"type": "array", "prefixItems": [{"type": "string"}], "items": False}
        assert contracts._draft07(schema) == {
            "type": "array",
            "items": [{"type": "string"}],
            "additionalItems": False,
        }

    def test_names_are_not_keywords(self) -> None:
        """A property or definition named like a keyword keeps its name and schema."""
        schema = {
            "properties": {"discriminator": {"type": "object"}, "$defs": {"$ref": "#/$defs/A"}},
            "$defs": {"A": {"discriminator": {"propertyName": "t"}, "type": "object"}},
        }
        assert contracts._draft07(schema) == {
            "properties": {
                "discriminator": {"type": "object"},
                "$defs": {"$ref": "#/definitions/A"},
            },
            "definitions": {"A": {"type": "object"}},
        }


class TestSchemasMatchTheWire:
    def test_structured_events_validate(self) -> None:
        """Structured-mode values the producers write are valid job-event instances."""
        validator = _validator("job-event.schema.json")
        for event in _demo_events():
            _, value, _ = encode_structured(event)
            validator.validate(json.loads(value))

    def test_binary_data_validates_against_its_variant(self) -> None:
        """A binary-mode value is valid against the data schema of its type's variant, the
        one variant of the oneOf whose `type` const is the ce_type."""
        schema = _schema("job-event.schema.json")
        variants = {}
        for option in schema["oneOf"]:
            envelope = _pointer(schema, option["$ref"].removeprefix("#"))
            variants[envelope["properties"]["type"]["const"]] = envelope
        assert len(variants) == len(schema["oneOf"])
        for event in _demo_events():
            _, value, headers = encode_binary(event)
            ce_type = dict(headers)["ce_type"].decode()
            envelope = variants[ce_type]
            data_schema = {**envelope["properties"]["data"], "definitions": schema["definitions"]}
            jsonschema.Draft7Validator(data_schema).validate(json.loads(value))

    def test_wrong_type_rejected(self) -> None:
        """The schema rejects what the decoder rejects: an unknown type, a missing subject."""
        validator = _validator("job-event.schema.json")
        _, value, _ = encode_structured(_demo_events()[0])
        good = json.loads(value)
        assert not list(validator.iter_errors(good))
        assert list(validator.iter_errors({**good, "type": "com.example.other"}))
        assert list(validator.iter_errors({k: v for k, v in good.items() if k != "subject"}))

    def test_job_state_validates(self) -> None:
        """Changelog values (JobState.to_json_bytes) are valid job-state instances."""
        validator = _validator("job-state.schema.json")
        state = new_state("job-contract-1", NOW)
        validator.validate(json.loads(encode_state(state)))
        for event in _demo_events()[:6]:
            result = apply(state, event, NOW)
            assert isinstance(result, JobState)
            state = result
        validator.validate(json.loads(encode_state(state)))

    def test_forgotten_job_validates(self) -> None:
        """A forgotten job's changelog value (ForgottenJob.to_json_bytes) is a valid
        forgotten-job instance, and a job state is not."""
        validator = _validator("forgotten-job.schema.json")
        marker = ForgottenJob(
            forgotten_at=NOW, client_job_id="job-1", version=4, status="Completed"
        )
        validator.validate(json.loads(marker.to_json_bytes()))
        assert list(validator.iter_errors(json.loads(encode_state(new_state("j", NOW)))))

    def test_result_records_validate(self) -> None:
        """Success and failure records as published are valid against their schemas."""
        success = SuccessRecord(
            client_job_id="job-1",
            job_id="wfp-1",
            http_status=200,
            state_version=3,
            job_status="Completed",
            attempts=1,
            synced_at=NOW,
            latency_ms=12,
            source_offsets=[SourceOffset(topic="t", partition=0, offset=4)],
            payload_sha256="ab" * 32,
        )
        _validator("success-record.schema.json").validate(json.loads(success.to_json_bytes()))
        failures = [
            FailureRecord.for_input(
                reason=FailureReason.invalid_event,
                message="bad json",
                source=SourceInfo.from_message(
                    topic="t", partition=0, offset=1, key=None, value=b"{", headers=[("h", None)]
                ),
                failed_at=NOW,
            ),
            FailureRecord.for_sync(
                client_job_id="job-1",
                reason=FailureReason.rejected_by_gateway,
                message="400",
                attempts=1,
                state_version=2,
                failed_at=NOW,
                status=400,
                body=b"nope",
            ),
        ]
        validator = _validator("failure-record.schema.json")
        for record in failures:
            validator.validate(json.loads(record.to_json_bytes()))

    def test_failure_reasons_enumerated(self) -> None:
        """The failure schema lists exactly the FailureReason values."""
        reasons = _schema("failure-record.schema.json")["definitions"]["FailureReason"]["enum"]
        assert set(reasons) == {r.value for r in FailureReason}


class TestAsyncApi:
    def test_parses_as_asyncapi_3(self) -> None:
        """asyncapi.yaml is YAML with an AsyncAPI 3 header and the four topics."""
        doc = _asyncapi()
        assert str(doc["asyncapi"]).startswith("3.")
        assert set(doc["channels"]) == {"jobEvents", "jobState", "succeeded", "failed"}

    def test_every_ref_resolves(self) -> None:
        """Every $ref (local or into a committed schema file, with fragment) resolves."""
        doc = _asyncapi()
        refs = _refs(doc)
        assert refs
        external = set()
        for ref in refs:
            target, _, fragment = ref.partition("#")
            if target:
                path = (CONTRACTS / target).resolve()
                assert path.parent == CONTRACTS.resolve(), ref
                assert path.is_file(), ref
                external.add(path.name)
                _pointer(json.loads(path.read_text("utf-8")), fragment)
            else:
                _pointer(doc, fragment)
        assert external == set(contracts.SCHEMAS)

    def test_topic_addresses_are_the_defaults(self) -> None:
        """Channel addresses equal the default topic names of the settings model."""
        channels = _asyncapi()["channels"]
        topics = TopicSettings()
        assert channels["jobEvents"]["address"] == topics.input[0]
        assert channels["succeeded"]["address"] == topics.succeeded
        assert channels["failed"]["address"] == topics.failed
        assert channels["jobState"]["address"] == f"{KafkaSettings().group_id}.job-state"
        policy = channels["jobState"]["bindings"]["kafka"]["topicConfiguration"]
        assert policy["cleanup.policy"] == ["compact"]

    def test_operations_reference_channels(self) -> None:
        """Each operation names a channel of the document and messages of that channel."""
        doc = _asyncapi()
        for name, operation in doc["operations"].items():
            channel_ref = operation["channel"]["$ref"]
            assert channel_ref.startswith("#/channels/"), name
            for message in operation["messages"]:
                assert message["$ref"].startswith(channel_ref + "/messages/"), name

    def test_asyncapi_3_shape(self) -> None:
        """The required AsyncAPI 3 fields: info title/version, channel addresses, operation
        actions, and a payload plus a Kafka key binding on every message."""
        doc = _asyncapi()
        assert doc["info"]["title"]
        assert doc["info"]["version"]
        for channel in doc["channels"].values():
            assert channel["address"] == channel["bindings"]["kafka"]["topic"]
        for operation in doc["operations"].values():
            assert operation["action"] in {"send", "receive"}
        for name, message in doc["components"]["messages"].items():
            assert "payload" in message, name
            assert "$ref" in message["bindings"]["kafka"]["key"], name

    def test_payloads_name_the_schema_format(self) -> None:
        """Every payload is a multi-format schema naming the draft of the generated files
        (without it the parser reads them as AsyncAPI schemas)."""
        for name, message in _asyncapi()["components"]["messages"].items():
            assert message["payload"]["schemaFormat"] == contracts.SCHEMA_FORMAT, name
            assert set(message["payload"]) == {"schemaFormat", "schema"}, name

    def test_servers_say_where_each_broker_listens(self) -> None:
        """The compose server is the port compose publishes to the host, and the local one
        the default port of deploy/kafka-local (not mislabelled as compose)."""
        servers = _asyncapi()["servers"]
        compose = yaml.safe_load((DOCS.parent / "docker-compose.yml").read_text("utf-8"))
        published = [str(p).split(":")[0] for p in compose["services"]["kafka"]["ports"]]
        assert servers["compose"]["host"] == f"localhost:{published[0]}"
        assert "compose" not in servers["local"]["description"]


class TestOperationsGuide:
    def test_failure_reasons_match_the_docstring(self) -> None:
        """docs/operations.md lists every FailureReason with the text of its docstring."""
        assert FailureReason.__doc__ is not None
        bullets = re.split(r"\n\s*- ", FailureReason.__doc__.replace("``", "`"))[1:]
        assert len(bullets) == len(FailureReason)
        guide = " ".join((DOCS / "operations.md").read_text(encoding="utf-8").split())
        for bullet in bullets:
            assert " ".join(bullet.split()) in guide, bullet
        for reason in FailureReason:
            assert f"- `{reason.value}`:" in guide, reason
