"""The Kafka ACL list (``consumer.kafka.acls``), its wording of denials, and its mirror in the
Strimzi KafkaUser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from pydantic import SecretStr

from consumer.config import KafkaSettings, SaslMechanism, SecurityProtocol, Settings, TopicSettings
from consumer.kafka.access import configs_denial, explain_denial
from consumer.kafka.acls import Operation, PatternType, Purpose, ResourceType, required_acls

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
_TYPES["transactionalId"] = ResourceType.TRANSACTIONAL_ID


def _settings(create_topics: bool = False) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=["b:9093"],
            group_id="g",
            create_topics=create_topics,
            security_protocol=SecurityProtocol.SASL_SSL,
            sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
            sasl_username="svc",
            sasl_password=SecretStr("pw-never-shown"),
        ),
        topics=TopicSettings(input=["in1", "in2"], succeeded="ok", failed="bad"),
    )


def _rules(settings: Settings, **options: Any) -> set[tuple[str, str, str, str]]:
    return {
        (acl.resource.name, acl.name, acl.operation.name, acl.pattern.name)
        for acl in required_acls(settings, **options)
    }


class TestRequiredAcls:
    def test_the_consumer_needs_reads_writes_group_and_transactional_ids(self) -> None:
        """Without the tools: Read on the inputs and the changelog, Write on the changelog and
        both result topics, Read on the group, Write on the transactional-id prefix."""
        assert _rules(_settings(), tools=False) == {
            ("TOPIC", "in1", "READ", "LITERAL"),
            ("TOPIC", "in2", "READ", "LITERAL"),
            ("TOPIC", "g.job-state", "READ", "LITERAL"),
            ("TOPIC", "g.job-state", "WRITE", "LITERAL"),
            ("TOPIC", "ok", "WRITE", "LITERAL"),
            ("TOPIC", "bad", "WRITE", "LITERAL"),
            ("GROUP", "g", "READ", "LITERAL"),
            ("TRANSACTIONAL_ID", "g.", "WRITE", "PREFIXED"),
        }

    def test_creating_topics_adds_create_on_the_internal_topics(self) -> None:
        """BASICSYNC_KAFKA__CREATE_TOPICS=true adds Create on the changelog and result topics."""
        added = _rules(_settings(create_topics=True), tools=False) - _rules(
            _settings(), tools=False
        )
        assert added == {
            ("TOPIC", name, "CREATE", "LITERAL") for name in ("g.job-state", "ok", "bad")
        }

    def test_the_tools_add_describe_configs_and_redrive_access(self) -> None:
        """``check`` reads the changelog's and the inputs' configs; ``redrive`` reads failures,
        writes inputs."""
        added = _rules(_settings()) - _rules(_settings(), tools=False)
        assert added == {
            ("TOPIC", "g.job-state", "DESCRIBE_CONFIGS", "LITERAL"),
            ("TOPIC", "in1", "DESCRIBE_CONFIGS", "LITERAL"),
            ("TOPIC", "in2", "DESCRIBE_CONFIGS", "LITERAL"),
            ("TOPIC", "bad", "READ", "LITERAL"),
            ("TOPIC", "in1", "WRITE", "LITERAL"),
            ("TOPIC", "in2", "WRITE", "LITERAL"),
        }


class TestDenialWording:
    def test_a_topic_denial_names_the_topic_and_its_operations(self) -> None:
        """A topic refusal inside an exception group names the topic and what to grant."""
        error = ExceptionGroup("x", [ValueError("other"), TopicAuthorizationFailedError("ok")])
        denied = explain_denial(error, _settings())
        assert denied is not None
        assert (
            str(denied) == "Kafka denied user 'svc' access to topic ok: grant Write on topic 'ok'"
        )

    def test_a_describe_configs_denial_names_that_acl_alone(self) -> None:
        """``check`` knows the one operation refused on the changelog: it names it, not the
        Read, Write and Create ``run`` needs there (which the principal may well hold)."""
        denied = str(configs_denial(_settings(), "g.job-state", "its cleanup.policy"))
        assert denied.endswith("grant DescribeConfigs on topic 'g.job-state'"), denied
        assert "Read" not in denied
        assert "Write" not in denied
        assert "pw-never-shown" not in denied

    def test_group_and_transactional_id_denials(self) -> None:
        """The group and the transactional ids are named with the operation to grant; the
        password never appears."""
        group = str(explain_denial(GroupAuthorizationFailedError("g"), _settings()))
        txn = str(explain_denial(TransactionalIdAuthorizationFailed("g.0"), _settings()))
        assert "grant Read on group 'g'" in group
        assert "grant Write on transactional id 'g.' (prefix)" in txn
        assert "pw-never-shown" not in group + txn

    def test_other_errors_are_not_denials(self) -> None:
        """Errors that are no authorization failure are left alone."""
        assert explain_denial(ValueError("x"), _settings()) is None


class TestKafkaUserMirror:
    def test_the_kafkauser_declares_exactly_the_acls_for_the_configmap(self) -> None:
        """The service's KafkaUser (deploy/k8s/strimzi/kafkausers.yaml) grants what
        ``required_acls`` lists for ``run`` with the ConfigMap's group and topics, nothing more
        and nothing less (the operator commands' extra rights belong to an operator's user)."""
        config = yaml.safe_load((DEPLOY / "configmap.yaml").read_text())["data"]
        settings = Settings(
            kafka=KafkaSettings(
                group_id=config["BASICSYNC_KAFKA__GROUP_ID"],
                create_topics=config["BASICSYNC_KAFKA__CREATE_TOPICS"] == "true",
            ),
            topics=TopicSettings(
                input=config["BASICSYNC_TOPICS__INPUT"].split(","),
                state=config["BASICSYNC_TOPICS__STATE"],
                succeeded=config["BASICSYNC_TOPICS__SUCCEEDED"],
                failed=config["BASICSYNC_TOPICS__FAILED"],
            ),
        )
        users = yaml.safe_load_all((DEPLOY / "strimzi" / "kafkausers.yaml").read_text())
        [user] = [u for u in users if u["metadata"]["name"] == settings.kafka.group_id]
        assert user["kind"] == "KafkaUser"
        assert user["spec"]["authorization"]["type"] == "simple"
        declared = set()
        for entry in user["spec"]["authorization"]["acls"]:
            resource = entry["resource"]
            for operation in entry["operations"]:
                declared.add(
                    (
                        _TYPES[resource["type"]],
                        resource["name"],
                        _operation(operation),
                        _PATTERNS[resource["patternType"]],
                    )
                )
        needed = required_acls(settings, tools=False)
        wanted = {(acl.resource, acl.name, acl.operation, acl.pattern) for acl in needed}
        assert declared == wanted
        assert {acl.purpose for acl in needed} == {Purpose.run}


#: Strimzi's pattern types as Kafka's
_PATTERNS = {"literal": PatternType.LITERAL, "prefix": PatternType.PREFIXED}


def _operation(strimzi: str) -> Operation:
    """Strimzi's ``DescribeConfigs`` is Kafka's ``DESCRIBE_CONFIGS``."""
    snake = "".join(f"_{c}" if c.isupper() else c for c in strimzi).lstrip("_").upper()
    return Operation[snake]
