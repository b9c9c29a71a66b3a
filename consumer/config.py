"""The settings tree: built once at the entry point from the environment, then passed down.

Every setting comes from an environment variable named ``BASICSYNC_<SECTION>__<FIELD>``
(``BASICSYNC_KAFKA__BOOTSTRAP_SERVERS``, ``BASICSYNC_SYNC__DEBOUNCE_MS``...). A secret can
instead come from a file: ``BASICSYNC_GATEWAY__CLIENT_SECRET_FILE=/run/secrets/x`` reads
the file (trailing newline stripped), which is how Kubernetes mounts secrets. Lists are
comma-separated. No other module reads the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from consumer.domain.job import SyncMode
from consumer.errors import ConfigError
from consumer.kafka.input_topics import InputTopics

ENV_PREFIX = "BASICSYNC_"
NESTED_DELIMITER = "__"
FILE_SUFFIX = "_FILE"
#: secrets whose file is also remembered (as ``<field>_file``) to be read again while running
REREAD_SECRETS = frozenset({"gateway.client_secret", "kafka.sasl_password"})
WORKFLOW_EXECUTE_SCOPE = "https://www.workfloplus.com/auth/workflow.execute"


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]

#: Kafka's rule for a topic name (``org.apache.kafka.common.internals.Topic``)
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse ``name`` as a topic, or None. Said at start, not as an
    ``InvalidTopic`` error code from the broker once the member is connecting."""
    if _TOPIC_NAME.fullmatch(name) is None or name in {".", ".."}:
        return (
            f"{name!r} is not a Kafka topic name (letters, digits, '.', '_' and '-' only, "
            "1 to 249 of them)"
        )
    return None


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class Compression(StrEnum):
    """Record compression; the codecs besides gzip come with aiokafka's extras (cramjam)."""

    none = "none"
    gzip = "gzip"
    snappy = "snappy"
    lz4 = "lz4"
    zstd = "zstd"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaSettings(_Section):
    """How to reach the brokers. ``bootstrap_servers`` is required, except that ``run
    --embedded`` starts a local broker when it is unset."""

    bootstrap_servers: CommaList | None = Field(
        default=None,
        description="host:port list; required unless `run --embedded` (then unset starts a "
        "local broker, development only)",
    )
    group_id: str = Field(default="basicsync", min_length=1, description="consumer group id")
    client_id: str = Field(default="basicsync", description="client id sent to the brokers")
    security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)"
    )
    sasl_username: str | None = Field(default=None, description="SASL user name")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret)")
    sasl_password_file: Path | None = Field(
        default=None,
        description="file holding `BASICSYNC_KAFKA__SASL_PASSWORD` (instead of it); read again "
        "every `BASICSYNC_KAFKA__SSL_FILES_CHECK_S`, so a rotated password is used for new "
        "connections without a restart",
    )
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for broker TLS")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client key (mTLS)")
    ssl_files_check_s: float = Field(
        default=60.0,
        ge=1.0,
        description="how often the TLS files (these three and gateway.ssl_cafile) and the SASL "
        "password file are read for a change: a renewed certificate or CA, or a rotated "
        "password, is used for new connections, no restart",
    )
    session_timeout_ms: int = Field(
        default=45_000, ge=6_000, description="group session timeout; a silent member is dropped"
    )
    max_poll_records: int = Field(default=2_000, ge=1, description="records per fetch batch")
    metadata_max_age_ms: int = Field(
        default=30_000,
        ge=1_000,
        description="how often the group member reads the topics' metadata: partitions added "
        "to an input topic are noticed within it, and the consumer then stops (exit 2) rather "
        "than read a job's events where its state is not; also how often the topics an input "
        "pattern matches are listed",
    )
    checkpoint_interval_ms: int = Field(
        default=1_000,
        ge=10,
        description="how often absorbed events are made durable and their offsets committed",
    )
    catch_up_checkpoint_interval_ms: int = Field(
        default=30_000,
        ge=10,
        description="the checkpoint interval while catching up: each changed job's state is "
        "written once per checkpoint, so a longer one writes (and restores) less and a crash "
        "replays more; the posting of the jobs the catch-up held gets one such interval of "
        "its own, counted from when the catch-up ended (at most two after the last "
        "checkpoint), so that each is written by its intent and its result, not also by a "
        "checkpoint in between; once they are posted the live interval applies at once",
    )
    startup_backoff_max_s: float = Field(
        default=30.0, gt=0, description="longest wait between attempts to reach Kafka at start"
    )
    max_event_bytes: int = Field(
        default=1_000_000, ge=1_024, description="larger events go to the failure topic"
    )
    max_event_time_ahead_s: float = Field(
        default=3600.0,
        gt=0,
        description="an event whose time is further ahead of this consumer's clock is refused "
        "(invalid_event): a producer's wrong clock would otherwise win every later write of its "
        "job until that time comes",
    )
    unreachable_report_s: float = Field(
        default=30.0,
        gt=0,
        description="Kafka unanswered this long under a running member is reported once: "
        "kafka_unreachable (error) with its cause (down, refusing our certificate or "
        "credentials, a name gone), and readiness's kafka check fails until it answers",
    )
    open_transaction_warn_s: float = Field(
        default=60.0,
        gt=0,
        description="an input partition whose last stable offset has held records back this "
        "long (a producer's transaction left open: nothing past it can be read) is reported: "
        "a warning naming it, and basicsync_input_held_seconds",
    )
    max_failure_value_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="input bytes a failure record carries at most (size and sha256 always)",
    )
    max_job_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="largest job state (changelog value, uncompressed); a job that would grow "
        "past it gets one job_too_large failure record and applies no more events. The "
        "changelog topic needs max.message.bytes of this plus 1 MiB; a smaller one lowers "
        "the limit to what it holds",
    )
    compression: Compression = Field(
        default=Compression.zstd,
        description="compression of the record batches produced: results and failures, and "
        "the changelog's when compress_changelog_values is false; zstd costs "
        "a fraction of gzip's CPU at a similar ratio; use gzip if a reader of the result "
        "topics cannot decompress zstd",
    )
    compress_changelog_values: bool = Field(
        default=True,
        description="compress each changelog value alone (zstd), so a restore keeps settled "
        "jobs compressed without decompressing them (about twice as fast, a fifth of the "
        "memory); a version without this setting cannot read such values: upgrading from one, "
        "roll out with false first, then again with true (docs/operations.md, Upgrading)",
    )
    create_topics: bool = Field(
        default=True, description="create missing changelog and result topics at start"
    )
    replication_factor: int = Field(
        default=1, ge=1, description="replication factor of topics this service creates"
    )

    _split = field_validator("bootstrap_servers", mode="before")(_split_commas)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs "
                    + _variables("kafka", missing, secrets={"sasl_password"})
                )
        return self


def _variables(section: str, fields: list[str], *, secrets: set[str]) -> str:
    """The environment variables of ``fields``, a secret's ``*_FILE`` form beside it."""
    names = []
    for field in fields:
        variable = f"{ENV_PREFIX}{section.upper()}{NESTED_DELIMITER}{field.upper()}"
        names.append(f"{variable} (or {variable}{FILE_SUFFIX})" if field in secrets else variable)
    return ", ".join(names)


class TopicSettings(_Section):
    """Topic names; the changelog defaults to ``<group_id>.job-state``."""

    input: CommaList = Field(
        default_factory=lambda: ["workfloplus.job-events"],
        min_length=1,
        description="comma-separated input topics (co-partitioned, keyed by clientJobId); with "
        "input_pattern set, only the topics `demo` and `run --embedded` write to",
    )
    input_pattern: str | None = Field(
        default=None,
        description="read every topic whose whole name matches this Python regular expression "
        "instead of the list (checked every kafka.metadata_max_age_ms); a matching topic "
        "without the changelog's partition count is refused and not read; the service's own "
        "topics and Kafka's internal ones never match",
    )
    succeeded: str = Field(default="workfloplus.basicsync.succeeded", description="success records")
    failed: str = Field(
        default="workfloplus.basicsync.failed",
        description="failure records, also the dead-letter topic of unusable events",
    )
    state: str | None = Field(
        default=None,
        description="changelog topic, one per group: never shared; default <group>.job-state",
    )

    _split = field_validator("input", mode="before")(_split_commas)

    @field_validator("input_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _listed_inputs_match(self) -> TopicSettings:
        """Topics named beside a pattern are the ones the demo writes to: one the pattern
        does not match would never be read."""
        if self.input_pattern is not None and "input" in self.model_fields_set:
            pattern = re.compile(self.input_pattern)
            unread = [topic for topic in self.input if pattern.fullmatch(topic) is None]
            if unread:
                raise ValueError(
                    f"input topics {', '.join(unread)} do not match input_pattern "
                    f"{self.input_pattern!r}: the consumer would never read them"
                )
        return self


class GatewaySettings(_Section):
    """WorkfloPlus. ``base_url`` is required, except that ``run --embedded`` starts the local
    sandbox when it is unset (development only)."""

    base_url: str | None = Field(
        default=None,
        description="e.g. https://gateway.workfloplus.com; required unless `run --embedded` "
        "(then unset starts the sandbox, development only)",
    )
    token_url: str | None = Field(
        default=None, description="e.g. https://accounts.workfloplus.com/connect/token"
    )
    client_id: str | None = Field(default=None, description="OAuth2 client id (M2M client)")
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth2 client secret (secret)"
    )
    client_secret_file: Path | None = Field(
        default=None,
        description="file holding `BASICSYNC_GATEWAY__CLIENT_SECRET` (instead of it); read "
        "again before every token request, so a rotated Secret is used without a restart",
    )
    scope: str = Field(
        default=WORKFLOW_EXECUTE_SCOPE, description="scope asked for (basicSync needs this one)"
    )
    proxy: SecretStr | None = Field(
        default=None,
        description="HTTP proxy to WorkfloPlus and its token endpoint, "
        "http://[user:password@]host:port (https goes through it by CONNECT); unset: the "
        "environment's HTTPS_PROXY / HTTP_PROXY, except the hosts in NO_PROXY (secret: it may "
        "hold a password)",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="a basicSync call slower than this is retried"
    )
    verify_tls: bool = Field(default=True, description="verify the gateway's TLS certificate")
    ssl_cafile: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that signs the gateway's and token endpoint's "
        "certificates; unset: the system's CAs",
    )

    @field_validator("proxy")
    @classmethod
    def _http_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if "://" in text and not text.startswith("http://"):
            raise ValueError("must be an http:// proxy (https goes through it by CONNECT)")
        return value

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _credentials_with_url(self) -> GatewaySettings:
        if self.base_url is not None:
            missing = [
                name
                for name in ("token_url", "client_id", "client_secret")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    "BASICSYNC_GATEWAY__BASE_URL is set, so "
                    + _variables("gateway", missing, secrets={"client_secret"})
                    + " must be set too"
                )
        if self.ssl_cafile is not None and not self.verify_tls:
            raise ValueError("ssl_cafile is set but verify_tls is false: the CA would not be used")
        return self


class SyncSettings(_Section):
    """When and how fast jobs are posted."""

    mode: SyncMode = Field(
        default=SyncMode.every_change, description="every_change | terminal_only"
    )
    debounce_ms: int = Field(default=200, ge=0, description="quiet time before a job is posted")
    max_delay_ms: int = Field(
        default=2_000, ge=0, description="longest a changed job waits while events keep coming"
    )
    concurrency: int = Field(
        default=32,
        ge=1,
        description="requests in flight at once; jobs whose intent is being committed or waits "
        "for a slot are as many, up to 16 times as many while requests find slots free",
    )
    catch_up_lag: int = Field(
        default=10_000,
        ge=0,
        description="input records behind the end above which non-terminal jobs wait (catch-up)",
    )
    catch_up_max_delay_ms: int = Field(
        default=30_000,
        ge=0,
        description="longest a changed, non-terminal job waits while catching up",
    )
    rate_limit_per_s: float | None = Field(default=None, gt=0, description="requests per second")
    retry_initial_ms: int = Field(
        default=200, ge=1, description="cap of the first backoff (full jitter, doubling)"
    )
    retry_max_ms: int = Field(default=30_000, ge=1, description="cap of any backoff")
    retry_max_attempts: int = Field(
        default=8, ge=1, description="attempts per job before retries_exhausted"
    )
    retry_max_elapsed_s: float = Field(
        default=300.0, gt=0, description="time per job before retries_exhausted"
    )
    retry_after_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="the longest a gateway's Retry-After is honoured: a job asked to wait a "
        "day (or milliseconds sent as seconds) comes back then, and spends its budget if "
        "refused again",
    )
    diagnosis_window_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "how far back other jobs' outcomes count as evidence that a failure is systemic "
            "or one job's own; with no success for this long, failures that all jobs get "
            "pause everything"
        ),
    )
    circuit_probe_max_s: float = Field(
        default=30.0,
        ge=1.0,
        description=(
            "during an outage one probe request is sent after 1 s, then at doubling intervals "
            "up to this long: the most an outage's end waits to be noticed"
        ),
    )
    circuit_failure_threshold: int | None = Field(
        default=None,
        ge=1,
        description=(
            "deprecated and ignored (a warning at start): failures are judged systemic or "
            "per-job by evidence across jobs, not counted; remove the variable"
        ),
    )
    hold_timeout_s: float = Field(
        default=300.0, gt=0, description="report a job still missing workflowId after this"
    )
    shutdown_deadline_s: float = Field(
        default=20.0,
        gt=0,
        description="time in-flight requests get on shutdown or revoke; a stop gives up a last "
        "checkpoint it cannot commit by twice this (exit code 3)",
    )
    retention_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="terminal, synced jobs are forgotten after"
    )
    in_doubt_window_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "a request whose outcome is unknown (timeout, connection lost) may still be applied "
            "by WorkfloPlus until this long after it was announced; the job is not posted again "
            "before. Default 3 x gateway.request_timeout_s; at least 2 x that"
        ),
    )
    forgotten_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="a forgotten job's marker is kept this long: its late events get job_forgotten",
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> SyncSettings:
        if self.max_delay_ms < self.debounce_ms:
            raise ValueError("max_delay_ms must be at least debounce_ms")
        if self.retry_max_ms < self.retry_initial_ms:
            raise ValueError("retry_max_ms must be at least retry_initial_ms")
        return self


class StoreSettings(_Section):
    memory_limit_mb: int | None = Field(
        default=None,
        ge=16,
        description="memory this process may use, in MiB; unset: the container's cgroup limit "
        "(none outside a container: unchecked)",
    )
    restore_memory_share: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="a restore stops with state_exceeds_memory once resident memory passes "
        "this share of the limit, rather than being killed by the kernel",
    )
    adopt_changelog_of: CommaList = Field(
        default_factory=list,
        description="comma-separated consumer groups whose changelog records this group "
        "restores as its own (a renamed group, the old one stopped for good); a record of any "
        "other group stops the member with changelog_shared",
    )

    _split = field_validator("adopt_changelog_of", mode="before")(_split_commas)


class ObservabilitySettings(_Section):
    log_format: str = Field(
        default="auto",
        pattern="^(auto|json|console)$",
        description="json, console, or auto (console on a terminal, else json)",
    )
    log_level: str = Field(
        default="info", pattern="^(debug|info|warning|error)$", description="lowest level logged"
    )
    http_port: int | None = Field(
        default=None, ge=0, le=65535, description="port for /metrics, /healthz, /readyz"
    )
    stall_limit_s: float = Field(
        default=180.0,
        gt=0,
        description="/healthz fails once an assigned partition went unprocessed this long",
    )


class _FileSecretsSource(PydanticBaseSettingsSource):
    """Reads ``BASICSYNC_X__Y_FILE`` variables: the file's content becomes ``x.y``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, path in self._environ.items():
            if not (name.startswith(ENV_PREFIX) and name.endswith(FILE_SUFFIX)):
                continue
            dotted = name[len(ENV_PREFIX) : -len(FILE_SUFFIX)].lower()
            if ENV_PREFIX + dotted.upper() in self._environ:
                raise ValueError(f"set {name} or {ENV_PREFIX}{dotted.upper()}, not both")
            try:
                content = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None
            target = values
            *sections, leaf = dotted.split(NESTED_DELIMITER)
            for section in sections:
                target = target.setdefault(section, {})
            target[leaf] = content
            if dotted.replace(NESTED_DELIMITER, ".") in REREAD_SECRETS:
                target[leaf + "_file"] = path
        return values


class _EnvSource(EnvSettingsSource):
    """The environment without ``*_FILE`` names: those are :class:`_FileSecretsSource`'s, and
    read here they would land in their section as unknown fields (``extra="forbid"``)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name: value
            for name, value in super()._load_env_vars().items()
            if not name.upper().endswith(FILE_SUFFIX)
        }


class Settings(BaseSettings):
    """Everything the service can be told. ``basicsync config`` prints this as a reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _EnvSource(settings_cls),
            _FileSecretsSource(settings_cls, dict(os.environ)),
        )

    @model_validator(mode="after")
    def _topics_are_named_as_kafka_allows(self) -> Settings:
        topics = self.topics
        changelog = (
            "TOPICS__STATE"
            if topics.state is not None
            else "KAFKA__GROUP_ID (the changelog is <group_id>.job-state unless "
            "BASICSYNC_TOPICS__STATE names one)"
        )
        named = {
            "TOPICS__INPUT (comma-separated)": [] if topics.input_pattern else topics.input,
            "TOPICS__SUCCEEDED": [topics.succeeded],
            "TOPICS__FAILED": [topics.failed],
            changelog: [self.state_topic],
        }
        problems = [
            f"{ENV_PREFIX}{variable}: {problem}"
            for variable, names in named.items()
            for problem in map(topic_name_problem, names)
            if problem is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _in_doubt_window_covers_a_request(self) -> Settings:
        window = self.sync.in_doubt_window_s
        if window is not None and window < 2 * self.gateway.request_timeout_s:
            raise ValueError(
                "sync.in_doubt_window_s must be at least twice gateway.request_timeout_s: a "
                "request may start up to one timeout after it is announced and last another"
            )
        return self

    @property
    def in_doubt_window_s(self) -> float:
        """See ``sync.in_doubt_window_s``; derived from the request timeout when unset."""
        return self.sync.in_doubt_window_s or 3 * self.gateway.request_timeout_s

    @property
    def state_topic(self) -> str:
        return self.topics.state or f"{self.kafka.group_id}.job-state"

    def input_topics(self) -> InputTopics:
        """The inputs as configured: the list, or the pattern and the topics it never takes."""
        pattern = self.topics.input_pattern
        return InputTopics(
            listed=tuple(self.topics.input) if pattern is None else (),
            pattern=re.compile(pattern) if pattern is not None else None,
            own=frozenset({self.state_topic, self.topics.succeeded, self.topics.failed}),
        )

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka.bootstrap_servers is None

    @property
    def embedded_gateway(self) -> bool:
        return self.gateway.base_url is None


def proxy_environment() -> dict[str, str]:
    """The environment's ``*_PROXY`` variables (``HTTPS_PROXY``, ``no_proxy``...), which name
    the gateway's proxy when ``BASICSYNC_GATEWAY__PROXY`` is unset."""
    return {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once; every problem is reported at once, one line each."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            where = NESTED_DELIMITER.join(str(part) for part in error["loc"]).upper()
            variable = f"{ENV_PREFIX}{where}" if where else "settings"
            lines.append(f"{variable}: {error['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
