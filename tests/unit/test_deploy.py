"""Deployment files: deploy/Dockerfile, docker-compose.yml and deploy/k8s (no Docker, no cluster).

Kubernetes manifests are validated offline against the schemas shipped in the
``kubernetes-validate`` wheel, which covers built-in kinds only. The Strimzi resources are
validated against the ``v1`` schemas of Strimzi's own CRDs (tests/fixtures/crds, taken from
Strimzi 0.49.0, the first release with ``kafka.strimzi.io/v1``), made strict the way
``kubectl --validate=strict`` is (an unknown field fails); the KEDA and Prometheus Operator
resources against the small structural schemas below (the fields this project relies on), and
the alert expressions with a PromQL parser.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import promql_parser
import pytest
import yaml
from pydantic import BaseModel

from consumer.config import (
    ENV_PREFIX,
    FILE_SUFFIX,
    NESTED_DELIMITER,
    Settings,
    SyncSettings,
    load_settings,
)
from tests.fixtures.served_metrics import served_series

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
CRDS = ROOT / "tests" / "fixtures" / "crds"
#: Files under deploy/k8s that no kustomization may list.
EXAMPLES = {"secret.example.yaml"}
KAFKA_POM = ROOT / "deploy" / "kafka-local" / "pom.xml"
#: The Kubernetes minor version manifests must be valid for (oldest still supported upstream).
K8S_VERSION = "1.31"


def _valid_variables() -> frozenset[str]:
    """BASICSYNC_<SECTION>__<FIELD> for every field of the model, and its *_FILE variant."""
    names: set[str] = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for name in model.model_fields:
            variable = f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{name.upper()}"
            names |= {variable, variable + FILE_SUFFIX}
    return frozenset(names)


def _pinned_kafka_version() -> str:
    """The project's one Kafka version: <kafka.version> in deploy/kafka-local/pom.xml."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    element = ET.parse(KAFKA_POM).getroot().find("m:properties/m:kafka.version", namespace)
    assert element is not None
    assert element.text
    return element.text.strip()


def _load_settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# --- Dockerfile ---------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for line in lines
        if line and not line.startswith("#")
        for parts in [line.split(None, 1)]
    ]


class TestDockerfile:
    def test_multi_stage_slim_runtime(self) -> None:
        """A builder stage makes the wheel; the last stage is python:3.11-slim and copies it."""
        froms = [arg for op, arg in _instructions() if op == "FROM"]
        assert len(froms) >= 2
        assert froms[-1].split()[0] == "python:3.11-slim"
        runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
        assert "pip wheel" in runs
        builder = froms[0].split()[-1]
        assert any(op == "COPY" and f"--from={builder}" in arg for op, arg in _instructions())

    def test_dependencies_come_from_the_lockfile(self) -> None:
        """The image installs exactly uv.lock's packages, checked against their hashes, with a
        pinned uv, and the project's wheel without resolving anything further."""
        runs = [arg for op, arg in _instructions() if op == "RUN"]
        text = " ".join(runs)
        assert re.search(r"pip install uv==\d+\.\d+\.\d+", text)
        assert "uv export --frozen" in text
        assert "--require-hashes" in text
        copies = " ".join(arg for op, arg in _instructions() if op == "COPY")
        assert "uv.lock" in copies
        installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
        for install in installs:
            if "/opt/venv/bin/pip" in install:
                assert "--no-deps" in install, install
        assert (ROOT / "uv.lock").is_file()

    def test_non_root_user(self) -> None:
        """The runtime runs as a numeric non-root user (Kubernetes runAsNonRoot can check it)."""
        users = [arg for op, arg in _instructions() if op == "USER"]
        assert users
        user = users[-1].split(":")[0]
        assert user.isdigit()
        assert int(user) != 0

    def test_entrypoint_is_console_script(self) -> None:
        """ENTRYPOINT ["basicsync"] and CMD ["run"], exec form."""
        ops = dict(_instructions())
        assert ops["ENTRYPOINT"] == '["basicsync"]'
        assert ops["CMD"] == '["run"]'


# --- docker-compose.yml -------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


class TestCompose:
    def test_services(self) -> None:
        """Kafka, topic creation, the sandbox, the consumer and the demo producer."""
        assert set(_services()) == {"kafka", "kafka-topics", "sandbox", "consumer", "demo"}

    def test_kafka_image_is_the_pinned_version(self) -> None:
        """Kafka and the topic job use apache/kafka:<kafka.version of deploy/kafka-local>."""
        expected = f"apache/kafka:{_pinned_kafka_version()}"
        assert _services()["kafka"]["image"] == expected
        assert _services()["kafka-topics"]["image"] == expected

    def test_kafka_is_kraft_single_node(self) -> None:
        """The broker is its own controller (KRaft), one voter, replication factor 1."""
        env = _services()["kafka"]["environment"]
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
        assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1

    def test_topic_job_creates_input_with_partitions(self) -> None:
        """The one-shot job runs kafka-topics.sh --create for the consumer's input topic."""
        job = _services()["kafka-topics"]
        argv = [*job["entrypoint"], *job["command"]]
        assert argv[0].endswith("kafka-topics.sh")
        assert "--create" in argv
        assert "--if-not-exists" in argv
        topic = argv[argv.index("--topic") + 1]
        assert topic == _services()["consumer"]["environment"]["BASICSYNC_TOPICS__INPUT"]
        assert re.fullmatch(
            r"\$\{BASICSYNC_PARTITIONS:-\d+\}|\d+", argv[argv.index("--partitions") + 1]
        )
        assert job["depends_on"]["kafka"]["condition"] == "service_healthy"

    def test_basicsync_services_use_the_image(self) -> None:
        """sandbox, consumer and demo run the image built from deploy/Dockerfile."""
        for name in ("sandbox", "consumer", "demo"):
            service = _services()[name]
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
            assert service["image"] == _services()["consumer"]["image"], name

    def test_sandbox_command(self) -> None:
        """The sandbox listens on 0.0.0.0:8080 with the client the consumer authenticates as."""
        argv = _services()["sandbox"]["command"]
        assert argv[0] == "sandbox"
        options = dict(zip(argv[1::2], argv[2::2], strict=True))
        env = _services()["consumer"]["environment"]
        assert options["--host"] == "0.0.0.0"
        assert env["BASICSYNC_GATEWAY__BASE_URL"] == f"http://sandbox:{options['--port']}"
        assert options["--client-id"] == env["BASICSYNC_GATEWAY__CLIENT_ID"]
        assert options["--client-secret"] == env["BASICSYNC_GATEWAY__CLIENT_SECRET"]

    def test_consumer_waits_for_its_dependencies(self) -> None:
        """The consumer starts after the topic job succeeded and the broker and sandbox are up."""
        depends = _services()["consumer"]["depends_on"]
        assert depends["kafka-topics"]["condition"] == "service_completed_successfully"
        assert depends["kafka"]["condition"] == "service_healthy"
        assert depends["sandbox"]["condition"] == "service_healthy"
        assert _services()["consumer"]["command"] == ["run"]

    def test_demo_behind_profile(self) -> None:
        """The demo producer only starts with --profile demo, after the input topic exists."""
        demo = _services()["demo"]
        assert demo["profiles"] == ["demo"]
        assert demo["command"][0] == "demo"
        assert demo["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
        assert all("profiles" not in s for n, s in _services().items() if n != "demo")

    def test_every_basicsync_variable_is_a_setting(self) -> None:
        """Each BASICSYNC_* variable any service gets names a field of the settings model."""
        valid = _valid_variables()
        seen = 0
        for name, service in _services().items():
            for variable in service.get("environment", {}):
                if variable.startswith(ENV_PREFIX):
                    seen += 1
                    assert variable in valid, f"{name}: {variable} is not a setting"
        assert seen

    def test_logs_are_json(self) -> None:
        """Every basicsync service logs JSON lines, so `docker compose logs` has no ANSI
        colour codes."""
        for name in ("consumer", "demo"):
            env = _services()[name]["environment"]
            assert env["BASICSYNC_OBSERVABILITY__LOG_FORMAT"] == "json", name

    def test_consumer_environment_loads(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The consumer's environment passes settings validation: real Kafka and gateway."""
        env = {k: str(v) for k, v in _services()["consumer"]["environment"].items()}
        settings = _load_settings_from(env, monkeypatch)
        assert settings.kafka.bootstrap_servers == ["kafka:9092"]
        assert not settings.embedded_kafka
        assert not settings.embedded_gateway
        assert settings.observability.http_port == 9000


# --- deploy/k8s ---------------------------------------------------------------------------

_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}},
}

_STRING: dict[str, Any] = {"type": "string"}
_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _STRING}
#: A Prometheus duration as the Prometheus Operator's CRDs accept it (``30s``, ``1h30m``).
_DURATION: dict[str, Any] = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    "(([0-9]+)ms)?)$",
}


def _closed(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object with these fields and no other."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": item}


def _resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _METADATA, "spec": spec},
    }


#: Structural schemas of the custom resources (what Kubernetes' own schemas cannot check).
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "maxReplicaCount", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "advanced": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    # KEDA reads trigger metadata as strings only
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["parameter", "name", "key"],
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): _resource(
        _closed(
            ["selector", "podMetricsEndpoints"],
            selector=_closed(["matchLabels"], matchLabels=_STRING_MAP),
            podMetricsEndpoints=_list_of(
                _closed(["port"], port=_STRING, path=_STRING, interval=_DURATION)
            ),
        )
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(
        _closed(
            ["groups"],
            groups=_list_of(
                _closed(
                    ["name", "rules"],
                    name=_STRING,
                    rules=_list_of(
                        _closed(
                            ["alert", "expr", "labels", "annotations"],
                            alert={"type": "string", "pattern": "^Basicsync[A-Z][A-Za-z]+$"},
                            expr=_STRING,
                            **{"for": _DURATION},
                            labels=_closed(
                                ["severity"], severity={"enum": ["critical", "warning", "info"]}
                            ),
                            annotations=_closed(
                                ["summary", "description"], summary=_STRING, description=_STRING
                            ),
                        )
                    ),
                )
            ),
        )
    ),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {
        "type": "object",
        "required": ["resources"],
        "properties": {"resources": {"type": "array", "items": {"type": "string"}}},
    },
}


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as ``kubectl --validate=strict`` applies it: an object with
    ``properties`` admits no other field unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, for each vendored CRD version."""
    schemas = {}
    for path in sorted(CRDS.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        schema = _strict(crd["openAPIV3Schema"])
        # The API server fills in metadata; what the manifests set is checked by _METADATA.
        schema["properties"]["metadata"] = _METADATA
        schemas[(f"{crd['group']}/{crd['version']}", crd["kind"])] = schema
    return schemas


CRD_SCHEMAS.update(_crd_schemas())


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                found.append((str(path.relative_to(K8S)), document))
    return found


def _one(kind: str) -> dict[str, Any]:
    matches = [doc for _, doc in _manifests() if doc["kind"] == kind and kind != "Kustomization"]
    assert len(matches) == 1, kind
    return matches[0]


def _named(kind: str, name: str) -> dict[str, Any]:
    (match,) = [
        doc for _, doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    return match


def _topics() -> dict[str, dict[str, Any]]:
    return {
        doc["spec"]["topicName"]: doc["spec"]
        for _, doc in _manifests()
        if doc["kind"] == "KafkaTopic"
    }


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap")["data"]
    return data


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


class TestManifestsValidate:
    @pytest.mark.parametrize(
        ("file", "manifest"),
        _manifests(),
        ids=[f"{f}:{d['kind']}:{d.get('metadata', {}).get('name', '')}" for f, d in _manifests()],
    )
    def test_valid(self, file: str, manifest: dict[str, Any]) -> None:
        """Every manifest is valid: built-in kinds against the Kubernetes schemas (strict:
        unknown fields fail), custom resources against the structural schemas above."""
        key = (manifest["apiVersion"], manifest["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.Draft7Validator(CRD_SCHEMAS[key]).validate(manifest)
        else:
            assert not key[0].startswith("kafka.strimzi.io/"), f"{file}: use kafka.strimzi.io/v1"
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)

    def test_strimzi_schemas_are_strict(self) -> None:
        """The Strimzi v1 schemas reject a misspelt field and a v1beta2-only field (the
        singular `operation` of an ACL), so the check above has teeth."""
        user = _named("KafkaUser", "basicsync")
        validator = jsonschema.Draft7Validator(CRD_SCHEMAS[("kafka.strimzi.io/v1", "KafkaUser")])
        assert not list(validator.iter_errors(user))
        misspelt = json.loads(json.dumps(user))
        misspelt["spec"]["authorisation"] = misspelt["spec"].pop("authorization")
        assert list(validator.iter_errors(misspelt))
        old = json.loads(json.dumps(user))
        acl = old["spec"]["authorization"]["acls"][0]
        acl["operation"] = acl.pop("operations")[0]
        assert list(validator.iter_errors(old))

    def test_validator_is_strict_and_offline(self) -> None:
        """The validator rejects a misspelt field (so the check above has teeth), offline."""
        broken = yaml.safe_load((K8S / "deployment.yaml").read_text(encoding="utf-8"))
        broken["spec"]["replica"] = 2
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)

    def test_expected_kinds(self) -> None:
        """Deployment, ConfigMap, Secret, Service, PDB, ScaledObject, four KafkaTopics and
        two KafkaUsers, a PodMonitor and a PrometheusRule, in three kustomizations."""
        kinds = sorted(doc["kind"] for _, doc in _manifests())
        assert kinds == sorted(
            [
                "ConfigMap",
                "Deployment",
                "KafkaTopic",
                "KafkaTopic",
                "KafkaTopic",
                "KafkaTopic",
                "KafkaUser",
                "KafkaUser",
                "Kustomization",
                "Kustomization",
                "Kustomization",
                "PodDisruptionBudget",
                "PodMonitor",
                "PrometheusRule",
                "ScaledObject",
                "Secret",
                "Service",
                "TriggerAuthentication",
            ]
        )

    def test_each_kustomization_lists_its_files_but_the_example_secret(self) -> None:
        """Each kustomization lists every manifest of its folder except the example Secret,
        so `kubectl apply -k` never overwrites the real Secret with the example."""
        for path in K8S.rglob("kustomization.yaml"):
            kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
            files = {p.name for p in path.parent.glob("*.yaml")} - {"kustomization.yaml"}
            assert set(kustomization["resources"]) == files - EXAMPLES, path
            assert not set(kustomization["resources"]) & EXAMPLES, path
        assert {p.name for p in K8S.glob("*.example.yaml")} == EXAMPLES

    def test_strimzi_resources_have_their_own_namespace(self) -> None:
        """Strimzi resources are in deploy/k8s/strimzi, whose kustomization sets the Kafka
        namespace; the consumer's kustomization sets none (it goes where it is applied)."""
        for file, doc in _manifests():
            if doc["kind"] != "Kustomization":
                is_strimzi = doc["apiVersion"].startswith("kafka.strimzi.io/")
                assert file.startswith("strimzi/") == is_strimzi, file
        strimzi = yaml.safe_load((K8S / "strimzi" / "kustomization.yaml").read_text("utf-8"))
        assert strimzi["namespace"]
        consumer = yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))
        assert "namespace" not in consumer


class TestConsumerSettings:
    def test_configmap_variables_are_settings(self) -> None:
        """Every ConfigMap key is a BASICSYNC_* variable of the settings model."""
        valid = _valid_variables()
        assert set(_config()) <= valid, set(_config()) - valid

    def test_configmap_loads_with_mounted_secret(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The ConfigMap plus the mounted secret file make valid settings (client secret read
        from the *_FILE path, never from the environment)."""
        secret = tmp_path / "client-secret"
        secret.write_text("s3cret\n", encoding="utf-8")
        env = {**_config(), "BASICSYNC_GATEWAY__CLIENT_SECRET_FILE": str(secret)}
        settings = _load_settings_from(env, monkeypatch)
        assert settings.gateway.client_secret is not None
        assert settings.gateway.client_secret.get_secret_value() == "s3cret"
        assert not settings.kafka.create_topics

    def test_secret_file_is_in_the_mounted_secret(self) -> None:
        """*_FILE points at a key of the example Secret, mounted read-only from that Secret."""
        path = Path(_config()["BASICSYNC_GATEWAY__CLIENT_SECRET_FILE"])
        mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True
        volumes = {v["name"]: v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"]}
        secret_name = volumes[mount["name"]]["secret"]["secretName"]
        secret = _one("Secret")  # secret.example.yaml: the shape of the Secret you create
        assert secret["metadata"]["name"] == secret_name
        assert path.name in secret["stringData"]
        assert not [k for k in _config() if k.endswith("CLIENT_SECRET")]

    def test_envfrom_configmap(self) -> None:
        """The container takes its settings from the ConfigMap and runs `basicsync run`."""
        sources = [s["configMapRef"]["name"] for s in _container()["envFrom"]]
        assert sources == [_one("ConfigMap")["metadata"]["name"]]
        assert _container()["args"] == ["run"]


class TestDeployment:
    def test_probes_on_metrics_port(self) -> None:
        """Liveness /healthz, readiness /readyz on BASICSYNC_OBSERVABILITY__HTTP_PORT."""
        port = int(_config()["BASICSYNC_OBSERVABILITY__HTTP_PORT"])
        ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
        assert ports["metrics"] == port
        assert _container()["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert _container()["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    def test_grace_period_exceeds_shutdown_deadline(self) -> None:
        """terminationGracePeriodSeconds >= twice BASICSYNC_SYNC__SHUTDOWN_DEADLINE_S (or its
        default) plus 10 s: a stop gives its last checkpoint until twice the deadline."""
        deadline = float(
            _config().get(
                "BASICSYNC_SYNC__SHUTDOWN_DEADLINE_S",
                SyncSettings.model_fields["shutdown_deadline_s"].default,
            )
        )
        grace = _one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= 2 * deadline + 10  # then the producers close and the member leaves

    def test_security_context(self) -> None:
        """Non-root (the image's uid), read-only root filesystem, no privilege escalation."""
        pod = _one("Deployment")["spec"]["template"]["spec"]["securityContext"]
        container = _container()["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] != 0
        user = [arg for op, arg in _instructions() if op == "USER"][-1].split(":")[0]
        assert pod["runAsUser"] == int(user)
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]

    def test_resources(self) -> None:
        """Requests and a memory limit are set."""
        resources = _container()["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]

    def test_service_and_pdb_select_the_pods(self) -> None:
        """The metrics Service and the PDB select exactly the Deployment's pods."""
        labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
        service = _one("Service")["spec"]
        assert service["selector"] == labels
        assert [p["targetPort"] for p in service["ports"]] == ["metrics"]
        assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
        assert _one("Deployment")["spec"]["selector"]["matchLabels"] == labels

    def test_an_unready_member_can_be_drained(self) -> None:
        """Readiness says what a member waits for (an outage, its checkpoints refused), not
        that it is unhealthy: an unready pod may always be evicted, or an outage that makes
        every member unready would block node drains until it ends."""
        budget = _one("PodDisruptionBudget")["spec"]
        assert budget["maxUnavailable"] == 1
        assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


class TestTopicsAndScaling:
    def test_every_topic_has_a_resource(self) -> None:
        """Input, changelog, succeeded and failed topics of the ConfigMap each have a KafkaTopic."""
        config = _config()
        names = {
            *config["BASICSYNC_TOPICS__INPUT"].split(","),
            config.get("BASICSYNC_TOPICS__STATE")
            or f"{config['BASICSYNC_KAFKA__GROUP_ID']}.job-state",
            config["BASICSYNC_TOPICS__SUCCEEDED"],
            config["BASICSYNC_TOPICS__FAILED"],
        }
        assert set(_topics()) == names

    def test_cleanup_policies(self) -> None:
        """The changelog is compacted; input and result topics are not."""
        config = _config()
        topics = _topics()
        state = config["BASICSYNC_TOPICS__STATE"]
        assert topics[state]["config"]["cleanup.policy"] == "compact"
        for name, spec in topics.items():
            if name != state:
                assert spec["config"]["cleanup.policy"] == "delete", name

    def test_co_partitioned(self) -> None:
        """Input topics and the changelog have the same partition count."""
        config = _config()
        counts = {
            _topics()[name]["partitions"]
            for name in [
                *config["BASICSYNC_TOPICS__INPUT"].split(","),
                config["BASICSYNC_TOPICS__STATE"],
            ]
        }
        assert len(counts) == 1

    def test_scaled_object_bounded_by_partitions(self) -> None:
        """KEDA scales the Deployment on the group's lag, never past the partition count."""
        scaled = _one("ScaledObject")["spec"]
        config = _config()
        inputs = config["BASICSYNC_TOPICS__INPUT"].split(",")
        partitions = min(_topics()[name]["partitions"] for name in inputs)
        assert 1 <= scaled.get("minReplicaCount", 0) <= scaled["maxReplicaCount"] <= partitions
        assert scaled["scaleTargetRef"]["name"] == _one("Deployment")["metadata"]["name"]
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config["BASICSYNC_KAFKA__GROUP_ID"]
        assert meta["topic"] in inputs
        assert meta["bootstrapServers"] == config["BASICSYNC_KAFKA__BOOTSTRAP_SERVERS"]
        assert meta.get("allowIdleConsumers", "false") == "false"

    def test_an_outage_does_not_scale_out(self) -> None:
        """KEDA leaves out the lag of partitions whose committed offset stands still (all of
        them while the circuit pauses consumption), so an outage adds no members."""
        (trigger,) = _one("ScaledObject")["spec"]["triggers"]
        assert trigger["metadata"]["excludePersistentLag"] == "true"
        assert trigger["metadata"].get("limitToPartitionsWithLag", "false") == "false"


def _acls(user: dict[str, Any]) -> set[tuple[str, str, str, frozenset[str]]]:
    return {
        (
            acl["resource"]["type"],
            acl["resource"].get("name", ""),
            acl["resource"].get("patternType", "literal"),
            frozenset(acl["operations"]),
        )
        for acl in user["spec"]["authorization"]["acls"]
        if acl.get("type", "allow") == "allow"
    }


class TestKafkaUsers:
    def test_the_service_has_exactly_the_acls_it_uses(self) -> None:
        """Read on the inputs, Read+Write on the changelog, Write on the result topics, Read
        on the group, Write on transactional ids prefixed "<group>." (Write implies Describe);
        nothing else
        (no Create, no cluster rights, no wildcard)."""
        config = _config()
        group = config["BASICSYNC_KAFKA__GROUP_ID"]
        state = config.get("BASICSYNC_TOPICS__STATE") or f"{group}.job-state"
        expected = {
            *(
                ("topic", name, "literal", frozenset({"Read"}))
                for name in config["BASICSYNC_TOPICS__INPUT"].split(",")
            ),
            ("topic", state, "literal", frozenset({"Read", "Write"})),
            ("topic", config["BASICSYNC_TOPICS__SUCCEEDED"], "literal", frozenset({"Write"})),
            ("topic", config["BASICSYNC_TOPICS__FAILED"], "literal", frozenset({"Write"})),
            ("group", group, "literal", frozenset({"Read"})),
            ("transactionalId", f"{group}.", "prefix", frozenset({"Write"})),
        }
        assert _acls(_named("KafkaUser", group)) == expected
        assert config["BASICSYNC_KAFKA__CREATE_TOPICS"] == "false"

    def test_the_scaler_may_only_describe(self) -> None:
        """KEDA's principal may describe the input topic and the group, nothing more."""
        meta = _one("ScaledObject")["spec"]["triggers"][0]["metadata"]
        assert _acls(_named("KafkaUser", "basicsync-keda")) == {
            ("topic", meta["topic"], "literal", frozenset({"Describe"})),
            ("group", meta["consumerGroup"], "literal", frozenset({"Describe"})),
        }

    def test_the_pods_authenticate_with_the_users_certificate(self) -> None:
        """The consumer's cert and key files are in the mounted Secret Strimzi issues for its
        KafkaUser, and the scaler authenticates with its own user's Secret."""
        config = _config()
        user = _named("KafkaUser", config["BASICSYNC_KAFKA__GROUP_ID"])
        assert user["spec"]["authentication"]["type"] == "tls"
        assert config["BASICSYNC_KAFKA__SECURITY_PROTOCOL"] == "SSL"
        mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
        volumes = {v["name"]: v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"]}
        for key in ("BASICSYNC_KAFKA__SSL_CERTFILE", "BASICSYNC_KAFKA__SSL_KEYFILE"):
            path = Path(config[key])
            secret = volumes[mounts[str(path.parent)]["name"]]["secret"]
            assert secret["secretName"] == user["metadata"]["name"], key
            assert path.name in {item["path"] for item in secret["items"]}, key
        refs = _one("TriggerAuthentication")["spec"]["secretTargetRef"]
        assert {r["parameter"]: r["name"] for r in refs if r["parameter"] in ("cert", "key")} == {
            "cert": "basicsync-keda",
            "key": "basicsync-keda",
        }


class TestTracingVariables:
    """The OTEL_* variables of docs/operations.md "Tracing" are offered, commented, in the
    Deployment and compose; tracing stays off unless someone uncomments them."""

    @staticmethod
    def _uncommented(text: str, marker: str) -> str:
        """The file with the commented block that starts at ``marker`` uncommented."""
        lines = text.splitlines()
        start = next(n for n, line in enumerate(lines) if line.strip() == f"# {marker}")
        indent = lines[start].index("#")
        n = start
        while n < len(lines) and lines[n].startswith(" " * indent + "#"):
            lines[n] = " " * indent + lines[n][indent + 2 :]
            n += 1
        return "\n".join(lines)

    @pytest.mark.parametrize(
        ("path", "marker"),
        [
            (K8S / "deployment.yaml", "env:"),
            (COMPOSE, "OTEL_EXPORTER_OTLP_ENDPOINT: http://otel-collector:4318"),
        ],
    )
    def test_commented_variables_are_documented_and_valid(self, path: Path, marker: str) -> None:
        """Each commented OTEL_* name is in the Tracing table of docs/operations.md, none is
        set as shipped, and uncommenting the block yields valid YAML setting an endpoint."""
        text = path.read_text()
        documented = set(re.findall(r"OTEL_[A-Z_]+", (ROOT / "docs" / "operations.md").read_text()))
        commented = set(re.findall(r"^\s*#.*?(OTEL_[A-Z_]+)", text, re.MULTILINE))
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in commented
        assert commented <= documented
        set_lines = [ln for ln in text.splitlines() if "OTEL_" in ln and "#" not in ln]
        assert set_lines == []
        enabled = yaml.safe_load_all(self._uncommented(text, marker))
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in json.dumps(list(enabled))


# --- deploy/k8s/monitoring ------------------------------------------------------------------

OPERATIONS = ROOT / "docs" / "operations.md"


def _alert_rules() -> list[dict[str, Any]]:
    rule = _one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _read_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (walking its parsed syntax tree)."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


class TestAlerts:
    async def test_every_expression_parses_and_reads_only_served_metrics(self) -> None:
        """Each alert is valid PromQL, and every metric it reads is one a consumer serves:
        an alert on a renamed metric would never fire."""
        served = await served_series()
        for rule in _alert_rules():
            read = _read_metrics(rule["expr"])
            assert read, rule["alert"]
            assert read <= served, (rule["alert"], sorted(read - served))

    def test_a_typo_is_caught(self) -> None:
        """The checks above have teeth: broken syntax raises, an unknown metric is seen."""
        with pytest.raises(ValueError, match="parenthesis"):
            promql_parser.parse("max by (pod) (basicsync_partitions_paused > 0")
        assert _read_metrics("rate(basicsync_nope_total[5m]) > 0") == {"basicsync_nope_total"}

    def test_names_are_unique_and_each_is_documented(self) -> None:
        names = [rule["alert"] for rule in _alert_rules()]
        assert len(names) == len(set(names))
        guide = OPERATIONS.read_text(encoding="utf-8")
        assert [name for name in names if f"`{name}`" not in guide] == []

    def test_the_operations_guides_alerting_metrics_each_have_an_alert(self) -> None:
        """What operations.md says to alert on is in the rules: the outage, a failing
        checkpoint, lag, rejected requests, invalid events, misrouted keys, unreadable states,
        memory and refused restores."""
        read = set().union(*(_read_metrics(rule["expr"]) for rule in _alert_rules()))
        assert read >= {
            "basicsync_partitions_paused",
            "basicsync_checkpoint_failing_seconds",
            "basicsync_consumer_lag",
            "basicsync_sync_requests_total",
            "basicsync_events_invalid_total",
            "basicsync_misrouted_keys_total",
            "basicsync_state_jobs_unreadable",
            "basicsync_restore_refusals_total",
            "process_resident_memory_bytes",
        }

    def test_the_operator_schemas_are_strict(self) -> None:
        """A misspelt field of the PodMonitor or of an alert fails validation."""
        monitor = json.loads(json.dumps(_one("PodMonitor")))
        monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
        rules = json.loads(json.dumps(_one("PrometheusRule")))
        rules["spec"]["groups"][0]["rules"][0]["annotation"] = {"summary": "x"}
        for manifest in (monitor, rules):
            schema = CRD_SCHEMAS[(manifest["apiVersion"], manifest["kind"])]
            assert list(jsonschema.Draft7Validator(schema).iter_errors(manifest))

    def test_the_pod_monitor_scrapes_the_port_the_deployment_serves(self) -> None:
        monitor = _one("PodMonitor")["spec"]
        pod = _one("Deployment")["spec"]["template"]
        assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {port["name"] for port in _container()["ports"]}
        assert {endpoint["port"] for endpoint in monitor["podMetricsEndpoints"]} <= ports
