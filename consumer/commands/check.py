"""``basicsync check``: are the settings, Kafka, the topics and WorkfloPlus ready for ``run``?

Prints one line per check, ``ok``, ``warn`` (passed, on something worth a look) or ``FAIL``,
and never a secret (the client secret, SASL password and tokens are used, not shown). Checks
that do not depend on a failed one still run, so one invocation shows everything that is wrong.
The exit code names the first failing area:

====  ==================================================================================
0     everything ok
2     settings invalid (nothing else can be checked)
3     Kafka unreachable (brokers, TLS, SASL) or no broker configured
4     topics: an input topic missing (or none matching the input pattern, or one matching it
      refused for its partition count), inputs not co-partitioned (partition counts, or keys in a
      sample of the newest records not where the Java default partitioner puts them; in the
      changelog too: partitions added after the state was written), an
      internal topic missing while ``BASICSYNC_KAFKA__CREATE_TOPICS=false``, a changelog with
      the wrong partition count, not compacted or whose ``max.message.bytes`` cannot hold
      ``BASICSYNC_KAFKA__MAX_JOB_BYTES``, a changelog that is not the one the group's offsets
      were committed with (deleted and created again, another topic, or records deleted),
      the group's input offsets below a partition's start (records deleted unread) or past
      its end (records lost), a
      broker ``message.max.bytes`` below the result record size, or the group's members on
      another assignor (a version before ``basicsync-copartitioned``, which refuses this one)
5     WorkfloPlus: no gateway configured, its CA file unreadable, no token issued (an untrusted
      certificate included), or the gateway not answering
====  ==================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumer.certificate_dates import certificate_dates
from consumer.config import Settings, load_settings
from consumer.errors import (
    ConfigError,
    ConfigsUnread,
    GatewayError,
    KafkaAccessDenied,
    TopicLayoutError,
)
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import GatewayClient
from consumer.gateway.proxy import Proxy, gateway_proxies
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.access import configs_denial, explain_denial
from consumer.kafka.admin import (
    changelog_policy_problem,
    described_configs,
    input_counts,
    input_policy_problem,
    partition_counts,
)
from consumer.kafka.connection import client_kwargs
from consumer.kafka.copartitioned import CoPartitionedAssignor
from consumer.kafka.diagnose import describe, explain, security_problem
from consumer.kafka.input_topics import InputTopics, select_inputs, starting_partition_count
from consumer.kafka.limits import RECORD_HEADROOM_BYTES, RESULT_RECORD_BYTES
from consumer.kafka.placement import misplaced_state, sample_placement
from consumer.kafka.starting import start_client
from consumer.observability.logging import configure_logging
from consumer.state.continuity import broken_continuity, changelog_owner
from consumer.state.recovery import changelog_bounds
from consumer.sync.diagnosis import ProbeResult, probe_result

T = TypeVar("T")

EXIT_OK = 0
EXIT_SETTINGS = 2
EXIT_KAFKA = 3
EXIT_TOPICS = 4
EXIT_GATEWAY = 5


@dataclass(frozen=True)
class Check:
    """One printed line: what was checked, whether it passed, and a detail without secrets.

    ``warn`` marks a check that passed on something ``run`` will warn about: worth a look
    before it starts, no reason to stop it (the exit code stays 0)."""

    name: str
    ok: bool
    detail: str
    exit_code: int
    warn: bool = False

    def line(self) -> str:
        status = "FAIL" if not self.ok else "warn" if self.warn else "ok  "
        return f"{status}  {self.name}: {self.detail}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Exit codes: 0 all ok, 2 settings, 3 Kafka, 4 topics, 5 gateway or token "
        "(the first failing area)."
    )
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds allowed for each network check"
    )
    parser.add_argument(
        "--skip-gateway",
        action="store_true",
        help="check the settings, Kafka and the topics only, not WorkfloPlus (e.g. after "
        "`run --embedded`, whose in-process sandbox ended with the run)",
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(Check("settings", False, str(exc), EXIT_SETTINGS).line())
        return EXIT_SETTINGS
    configure_logging(settings.observability.log_format, "error")
    checks = [Check("settings", True, "valid", EXIT_OK)]
    if settings.kafka.ssl_certfile is not None:
        checks.append(client_certificate_check(settings.kafka.ssl_certfile, datetime.now(UTC)))
    checks += asyncio.run(_network_checks(settings, args.timeout, gateway=not args.skip_gateway))
    for check in checks:
        print(check.line(), flush=True)
    failed = [check.exit_code for check in checks if not check.ok]
    return min(failed, default=EXIT_OK)


def client_certificate_check(certfile: Path, now: datetime) -> Check:
    """When the Kafka client certificate expires: a warning once its renewal is overdue
    (``consumer.certificate_dates``), a failure once it has expired (Kafka refuses it)."""
    name = "client certificate"
    try:
        dates = certificate_dates(certfile.read_bytes())
    except OSError as exc:
        return Check(name, False, f"cannot read {certfile}: {exc.strerror}", EXIT_KAFKA)
    if dates is None:
        return Check(name, False, f"{certfile} holds no certificate", EXIT_KAFKA)
    left = dates.not_after - now
    expiry = f"{certfile} expires {dates.not_after.isoformat()}"
    if left <= timedelta(0):
        return Check(name, False, f"{expiry}: expired, Kafka refuses it", EXIT_KAFKA)
    detail = f"{expiry}, in {_duration(left)}"
    if dates.renewal_overdue(now):
        return Check(name, True, f"{detail}: its renewal is overdue", EXIT_OK, warn=True)
    return Check(name, True, detail, EXIT_OK)


def _duration(left: timedelta) -> str:
    if left >= timedelta(days=2):
        return f"{left.days} days"
    if left >= timedelta(hours=2):
        return f"{left.total_seconds() / 3600:.0f} hours"
    if left >= timedelta(minutes=2):
        return f"{left.total_seconds() / 60:.0f} minutes"
    return f"{left.total_seconds():.0f} seconds"


async def _network_checks(settings: Settings, limit_s: float, *, gateway: bool) -> list[Check]:
    if not gateway:
        return await _kafka_checks(settings, limit_s)
    kafka, workfloplus = await asyncio.gather(
        _kafka_checks(settings, limit_s), _gateway_checks(settings, limit_s)
    )
    return [*kafka, *workfloplus]


async def _kafka_checks(settings: Settings, limit_s: float) -> list[Check]:
    servers = settings.kafka.bootstrap_servers
    if servers is None:
        detail = "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS is not set (run would start a local broker)"
        return [Check("kafka", False, detail, EXIT_KAFKA)]
    admin = AIOKafkaAdminClient(
        **client_kwargs(settings.kafka, servers), request_timeout_ms=int(limit_s * 1000)
    )
    try:
        async with asyncio.timeout(limit_s):
            await start_client(admin.start())
        async with asyncio.timeout(limit_s):
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        problem = await security_problem(settings.kafka, servers, limit_s)
        if problem is not None:
            return [Check("kafka", False, str(problem), EXIT_KAFKA)]
        detail = f"cannot reach {','.join(servers)}: {await explain(exc, servers)}"
        return [Check("kafka", False, detail, EXIT_KAFKA)]
    brokers = len(cluster.get("brokers", []))
    checks = [Check("kafka", True, f"{','.join(servers)} ({brokers} brokers)", EXIT_OK)]
    try:
        return checks + await _connected_checks(admin, settings, limit_s)
    finally:
        await admin.close()


async def _connected_checks(
    admin: AIOKafkaAdminClient, settings: Settings, limit_s: float
) -> list[Check]:
    """The checks after the connection, each group given ``--timeout``; a Kafka that stops
    answering midway fails the ``kafka`` line (exit 3), not the topics. The input topics are
    listed once, after the topic checks, for every check of what they hold."""
    of_inputs = (
        (_input_policy_checks, "input topics' cleanup policy"),
        (_placement_checks, "keys' placement"),
        (_continuity_checks, "changelog's continuity"),
    )
    checks: list[Check] = []
    area = "topics"
    try:
        async with asyncio.timeout(limit_s):
            checks += await _topic_checks(admin, settings)
            found = await _inputs_read(admin, settings)
        inputs, counts = found or ([], {})  # none: the topic checks report the layout
        for more, name in of_inputs if inputs else ():
            area = name
            async with asyncio.timeout(limit_s):
                checks += await more(admin, settings, inputs, counts)
        area = "group"
        async with asyncio.timeout(limit_s):
            checks += await _group_checks(admin, settings)
    except TimeoutError:
        servers = ",".join(settings.kafka.bootstrap_servers or ())
        detail = (
            f"{servers} answered, then nothing came for {limit_s:g} s (--timeout) while "
            f"checking the {area}: a broker that hangs or is overloaded"
        )
        checks.append(Check("kafka", False, detail, EXIT_KAFKA))
    except (KafkaError, KafkaAccessDenied, TopicLayoutError) as exc:
        denied = exc if isinstance(exc, KafkaAccessDenied) else explain_denial(exc, settings)
        detail = str(denied) if denied is not None else describe(exc)
        checks.append(Check("topics", False, detail, EXIT_TOPICS))
    return checks


async def _inputs_read(
    admin: AIOKafkaAdminClient, settings: Settings
) -> tuple[list[str], dict[str, int]] | None:
    """The input topics ``run`` would read and every topic's partition count (the changelog's
    included); None where the topic checks already report the layout as broken."""
    spec = settings.input_topics()
    _, inputs = await input_counts(admin, spec)
    counts = {**inputs, **await partition_counts(admin, [settings.state_topic])}
    try:
        count = starting_partition_count(spec, inputs, counts.get(settings.state_topic))
    except TopicLayoutError:
        return None
    read = list(select_inputs(spec, inputs, count).read)
    return (read, counts) if read else None


def _input_check(
    spec: InputTopics, counts: dict[str, int], changelog_count: int | None
) -> tuple[Check, int | None]:
    """The input topics, as the consumer's start judges them, and their partition count."""
    missing = [topic for topic in spec.listed if topic not in counts]
    if missing:
        return Check(
            "input topics", False, f"do not exist: {', '.join(missing)}", EXIT_TOPICS
        ), None
    try:
        partitions = starting_partition_count(spec, counts, changelog_count)
    except TopicLayoutError as exc:
        return Check("input topics", False, str(exc), EXIT_TOPICS), None
    selection = select_inputs(spec, counts, partitions)
    layout = ", ".join(f"{topic}={counts[topic]}" for topic in selection.read)
    detail = f"{layout} partitions"
    if spec.pattern is not None:
        detail = f"{spec.describe()} matches {detail}"
    if selection.refused:
        refused = ", ".join(f"{topic}={n}" for topic, n in selection.refused.items())
        detail += f"; refused, not read (not {partitions} partitions): {refused}"
    return Check("input topics", not selection.refused, detail, EXIT_TOPICS), partitions


async def _topic_checks(admin: AIOKafkaAdminClient, settings: Settings) -> list[Check]:
    """The same rules as the consumer's start (``ensure_topology``), reported, not enforced."""
    internal = [settings.state_topic, settings.topics.succeeded, settings.topics.failed]
    spec = settings.input_topics()
    _, inputs = await input_counts(admin, spec)
    counts = {**inputs, **await partition_counts(admin, internal)}
    input_check, partitions = _input_check(spec, inputs, counts.get(settings.state_topic))
    checks = [input_check]
    creatable = settings.kafka.create_topics
    for topic in internal:
        if topic in counts:
            ok = topic != settings.state_topic or partitions in (None, counts[topic])
            detail = f"{topic} exists ({counts[topic]} partitions)"
            if not ok:
                detail += f"; the changelog needs one per input partition ({partitions})"
            if topic == settings.state_topic:
                reads = "its retention and max.message.bytes"
                config = await _topic_configs(admin, settings, topic, reads)
                problem = changelog_policy_problem(config)
                if problem is not None:
                    ok = False
                    detail += f"; {problem}"
                held = int(config.get("max.message.bytes", "0")) - RECORD_HEADROOM_BYTES
                if held < settings.kafka.max_job_bytes:
                    ok = False
                    detail += (
                        f"; max.message.bytes is {config.get('max.message.bytes')}, it must be "
                        f"at least {settings.kafka.max_job_bytes + RECORD_HEADROOM_BYTES} to "
                        "hold BASICSYNC_KAFKA__MAX_JOB_BYTES plus 1 MiB (until then a job "
                        "outgrowing what it holds gets job_too_large)"
                    )
            checks.append(Check("topic", ok, detail, EXIT_TOPICS))
        elif creatable:
            checks.append(Check("topic", True, f"{topic} missing, created at start", EXIT_OK))
        else:
            detail = f"{topic} missing and BASICSYNC_KAFKA__CREATE_TOPICS=false"
            checks.append(Check("topic", False, detail, EXIT_TOPICS))
    checks.append(await _broker_check(admin))
    return checks


async def _placement_checks(
    admin: AIOKafkaAdminClient, settings: Settings, inputs: list[str], counts: dict[str, int]
) -> list[Check]:
    """Keys on their murmur2 partition, in a sample of the newest records of each input topic
    and of the changelog (the state of a job is where the inputs' count put its key)."""
    changelog = settings.state_topic
    assert settings.kafka.bootstrap_servers is not None
    kafka = client_kwargs(settings.kafka, settings.kafka.bootstrap_servers)
    sampled = {t: counts[t] for t in inputs}
    if counts.get(changelog) == counts[inputs[0]]:
        sampled[changelog] = counts[inputs[0]]
    placements = await sample_placement(lambda **extra: AIOKafkaConsumer(**kafka, **extra), sampled)
    checks = []
    for placement in placements:
        if placement.topic == changelog:
            misplaced = misplaced_state(placement, sampled[changelog])
            if misplaced is not None:
                checks.append(Check("changelog placement", False, misplaced, EXIT_TOPICS))
            else:
                detail = f"{changelog}: {placement.sampled} sampled job keys on their partition"
                checks.append(Check("changelog placement", True, detail, EXIT_OK))
            checks.append(writers_check(settings, placement.writers))
        elif placement.misplaced:
            detail = (
                f"{placement.topic}: {placement.misplaced} of {placement.sampled} sampled keys are "
                "not on the partition the Java default (murmur2) partitioner picks; its producers "
                "use another partitioner, so a job's events reach two partitions (misrouted)"
            )
            checks.append(Check("partitioner", False, detail, EXIT_TOPICS))
        else:
            detail = (
                f"{placement.topic}: {placement.sampled} sampled keys on their murmur2 partition"
            )
            checks.append(Check("partitioner", True, detail, EXIT_OK))
    return checks


def writers_check(settings: Settings, writers: frozenset[str]) -> Check:
    """The changelog's newest records are this group's (or a group it adopted): what a
    restore checks of every record (``consumer.state.continuity``)."""
    changelog, group = settings.state_topic, settings.kafka.group_id
    owner = changelog_owner(settings)
    others = sorted(writer for writer in writers if not owner.accepts(writer.encode()))
    if others:
        detail = (
            f"{changelog}: its newest records were written by group {', '.join(others)}, and "
            f"this is group {group}: two groups share one changelog, and basicsync run stops "
            "at its restore (ChangelogShared; docs/operations.md, 'Topics')"
        )
        return Check("changelog writers", False, detail, EXIT_TOPICS)
    named = ", ".join(sorted(writers)) or "none named (written before records named one)"
    return Check("changelog writers", True, f"{changelog}: sampled writers {named}", EXIT_OK)


async def _continuity_checks(
    admin: AIOKafkaAdminClient, settings: Settings, inputs: list[str], counts: dict[str, int]
) -> list[Check]:
    """The changelog is the one the group's committed offsets were committed with: what a
    member's take checks before it restores (``consumer.state.continuity``)."""
    changelog = settings.state_topic
    if {counts[t] for t in inputs} != {counts.get(changelog)}:
        return []  # reported by the topic checks already
    offsets = await _group_offsets(admin, settings.kafka.group_id)
    committed = {tp: c for tp, c in offsets.items() if tp.topic in inputs and c.offset >= 0}
    metadata: dict[int, list[str]] = {}
    for tp, mark in committed.items():
        metadata.setdefault(tp.partition, []).append(mark.metadata)
    assert settings.kafka.bootstrap_servers is not None
    kafka = client_kwargs(settings.kafka, settings.kafka.bootstrap_servers)
    if not metadata:
        detail = f"group {settings.kafka.group_id} has no committed offsets yet"
        first_start = await _first_start_check(kafka, settings.kafka.group_id, inputs, counts)
        return [Check("changelog continuity", True, detail, EXIT_OK), first_start]
    input_offsets = await _input_offsets_check(kafka, settings.kafka.group_id, committed)
    bounds = await changelog_bounds(
        lambda **extra: AIOKafkaConsumer(**kafka, **extra), changelog, metadata
    )
    broken = (broken_continuity(changelog, p, metadata[p], bounds[p]) for p in sorted(metadata))
    problems = [problem for problem in broken if problem is not None]
    if problems:
        detail = "; ".join(problems) + " (basicsync run stops: docs/operations.md, 'Topics')"
        return [Check("changelog continuity", False, detail, EXIT_TOPICS), input_offsets]
    detail = f"{changelog} holds what group {settings.kafka.group_id}'s offsets were committed with"
    return [Check("changelog continuity", True, detail, EXIT_OK), input_offsets]


async def _group_checks(admin: AIOKafkaAdminClient, settings: Settings) -> list[Check]:
    """The group's members, if any, use this version's assignor: a group running another
    one (a version before ``basicsync-copartitioned``) refuses every member of this one."""
    group = settings.kafka.group_id
    [response] = await _asked_again(lambda: admin.describe_consumer_groups([group]))
    [described] = response.to_object()["groups"]
    return [
        group_protocol_check(
            group, described["protocol_type"], described["protocol"], len(described["members"])
        )
    ]


def group_protocol_check(group: str, protocol_type: str, protocol: str, members: int) -> Check:
    """``check``'s verdict on the assignor the group's members agreed on."""
    if members == 0 or protocol_type != "consumer":
        return Check("group", True, f"{group}: no member running", EXIT_OK)
    if protocol == CoPartitionedAssignor.name:
        detail = f"{group}: {members} members on {protocol}"
        return Check("group", True, detail, EXIT_OK)
    detail = (
        f"{group}: {members} members on the {protocol!r} assignor, a version before "
        f"{CoPartitionedAssignor.name}: the group refuses this version's members until every "
        'one of them has stopped (docs/operations.md, "Upgrading")'
    )
    return Check("group", False, detail, EXIT_TOPICS)


#: how often, and how far apart, a group request is asked while Kafka says to ask again
_ASK_ATTEMPTS, _ASK_BACKOFF_S = 20, 0.5


async def _group_offsets(
    admin: AIOKafkaAdminClient, group: str
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets (asked as :func:`_asked_again` says)."""
    offsets: dict[TopicPartition, OffsetAndMetadata] = await _asked_again(
        lambda: admin.list_consumer_group_offsets(group)
    )
    return offsets


async def _asked_again(ask: Callable[[], Awaitable[T]]) -> T:
    """``ask()``, again while Kafka answers with a retriable error: a cluster's first group
    request creates ``__consumer_offsets``, and its coordinator is "not available" until that
    topic's partitions have leaders, which is no fault to report."""
    for attempt in range(_ASK_ATTEMPTS):
        try:
            return await ask()
        except KafkaError as exc:
            if not exc.retriable or attempt == _ASK_ATTEMPTS - 1:
                raise
            await asyncio.sleep(_ASK_BACKOFF_S)
    raise AssertionError("unreachable")  # pragma: no cover


async def _first_start_check(
    kafka: dict[str, Any], group: str, inputs: list[str], counts: dict[str, int]
) -> Check:
    """A group with no offsets reads each input partition from its start: where retention
    has moved that start, the events below it are gone for this group (``run`` warns
    ``input_read_from_start``)."""
    reader = AIOKafkaConsumer(**kafka)
    partitions = [TopicPartition(t, p) for t in inputs for p in range(counts[t])]
    try:
        await start_client(reader.start())
        starts = await reader.beginning_offsets(partitions)
    finally:
        await reader.stop()
    return first_start_check(group, starts)


def first_start_check(group: str, starts: dict[TopicPartition, int]) -> Check:
    """``check``'s word on where a group with no committed offsets will start reading."""
    moved = [
        f"{tp.topic} partition {tp.partition} starts at {start}"
        for tp, start in sorted(starts.items())
        if start > 0
    ]
    if not moved:
        detail = f"group {group} will read every input partition from offset 0"
        return Check("input offsets", True, detail, EXIT_OK)
    shown = "; ".join(moved[:5]) + (f" (and {len(moved) - 5} more)" if len(moved) > 5 else "")
    detail = (
        f"group {group} has no committed offsets and will read from each partition's start, "
        f"but {shown}: records below were deleted before this group read them, so a job "
        "that began among them is posted without those events, over what WorkfloPlus holds. "
        "Is this the group id that ran before? (docs/operations.md, 'Topics')"
    )
    return Check("input offsets", True, detail, EXIT_OK, warn=True)


async def _input_offsets_check(
    kafka: dict[str, Any], group: str, committed: dict[TopicPartition, OffsetAndMetadata]
) -> Check:
    """The group's committed input offsets lie within their partitions: below the start,
    records were deleted (by retention) before the group read them; past the end, the
    partition lost records."""
    reader = AIOKafkaConsumer(**kafka)
    try:
        await start_client(reader.start())
        starts = await reader.beginning_offsets(list(committed))
        ends = await reader.end_offsets(list(committed))
    finally:
        await reader.stop()
    offsets = {tp: mark.offset for tp, mark in committed.items()}
    problems = input_offset_problems(group, offsets, starts, ends)
    if problems:
        detail = "; ".join(problems) + " (docs/operations.md, 'Topics')"
        return Check("input offsets", False, detail, EXIT_TOPICS)
    detail = f"group {group}'s offsets are within every input partition (nothing deleted unread)"
    return Check("input offsets", True, detail, EXIT_OK)


def input_offset_problems(
    group: str,
    committed: dict[TopicPartition, int],
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> list[str]:
    """What ``basicsync run`` will find wrong with the group's committed input offsets."""
    below = [
        f"{tp.topic} partition {tp.partition} at offset {offset} starts at {starts[tp]} "
        f"({starts[tp] - offset} records)"
        for tp, offset in sorted(committed.items())
        if offset < starts[tp]
    ]
    past = [
        f"{tp.topic} partition {tp.partition} at offset {offset} ends at {ends[tp]}"
        for tp, offset in sorted(committed.items())
        if offset > ends[tp]
    ]
    problems = []
    if below:
        problems.append(
            f"group {group}'s offsets are below the start of {'; '.join(below)}: those "
            "records were deleted before the group read them (basicsync run reports them as "
            "input_records_lost and goes on)"
        )
    if past:
        problems.append(
            f"group {group}'s offsets are past the end of {'; '.join(past)}: the partition "
            "lost records (an unclean leader election, a broker restored from an older "
            "disk), or the topic was created again under offsets kept from the old one "
            "(basicsync run reports input_position_past_end and reads the partition again "
            "from its start)"
        )
    return problems


async def _broker_check(admin: AIOKafkaAdminClient) -> Check:
    """The broker's ``message.max.bytes``, the limit of the result topics this service creates."""
    cluster = await admin.describe_cluster()
    brokers = cluster.get("brokers", [])
    if not brokers:
        return Check("broker limits", False, "no broker described", EXIT_TOPICS)
    node = str(brokers[0]["node_id"])
    config = await _broker_configs(admin, node)
    limit = int(config.get("message.max.bytes", "1048588"))
    ok = limit >= RESULT_RECORD_BYTES + 1024
    detail = f"message.max.bytes is {limit}"
    if not ok:
        detail += (
            f"; result records are fitted to {RESULT_RECORD_BYTES} bytes, raise it to at least "
            f"{RESULT_RECORD_BYTES + 1024} (or give the result topics a max.message.bytes "
            "that large)"
        )
    return Check("broker limits", ok, detail, EXIT_TOPICS)


async def _topic_configs(
    admin: AIOKafkaAdminClient, settings: Settings, topic: str, reads: str
) -> dict[str, str]:
    """Every config entry of ``topic``, which ``check`` reads ``reads`` from. Refused (no
    ``DescribeConfigs``, which ``check`` needs) is a denial naming that ACL, and unread for
    another reason fails the check saying why: never an empty config read as the broker's
    defaults."""
    try:
        return await described_configs(admin, ConfigResourceType.TOPIC, topic)
    except ConfigsUnread as exc:
        if exc.denied:
            raise configs_denial(settings, topic, reads) from None
        raise TopicLayoutError(str(exc)) from None


async def _input_policy_checks(
    admin: AIOKafkaAdminClient, settings: Settings, topics: list[str], _counts: dict[str, int]
) -> list[Check]:
    """The input topics ``run`` would read delete old events, never compact them
    (``input_policy_problem``)."""
    compacted: list[str] = []
    for topic in topics:
        config = await _topic_configs(admin, settings, topic, "its cleanup.policy")
        problem = input_policy_problem(config)
        if problem is not None:
            compacted.append(f"{topic}: {problem}")
    if compacted:
        return [Check("input retention", False, "; ".join(compacted), EXIT_TOPICS)]
    detail = f"{', '.join(topics)}: old events deleted by age, never compacted"
    return [Check("input retention", True, detail, EXIT_OK)]


async def _broker_configs(admin: AIOKafkaAdminClient, node: str) -> dict[str, str]:
    """Every config entry of a broker; empty when unread (its limits are then reported
    unknown)."""
    try:
        return await described_configs(admin, ConfigResourceType.BROKER, node)
    except ConfigsUnread:
        return {}


async def _gateway_checks(settings: Settings, limit_s: float) -> list[Check]:
    gateway = settings.gateway
    if gateway.base_url is None:
        detail = "BASICSYNC_GATEWAY__BASE_URL is not set (run would start the local sandbox)"
        return [Check("gateway", False, detail, EXIT_GATEWAY)]
    # Enforced by GatewaySettings when base_url is set.
    assert gateway.token_url
    assert gateway.client_id
    assert gateway.client_secret
    try:
        gateway_proxy, token_proxy = gateway_proxies(gateway)
        connector = aiohttp.TCPConnector(ssl=gateway_ssl(gateway))
    except ConfigError as exc:
        return [Check("gateway", False, str(exc), EXIT_GATEWAY)]
    async with aiohttp.ClientSession(connector=connector) as session:
        tokens = ClientCredentialsTokenProvider(
            session,
            gateway.token_url,
            gateway.client_id,
            gateway.client_secret,
            gateway.scope,
            timeout=limit_s,
            proxy=token_proxy,
        )
        token_url = gateway.token_url + _through(token_proxy)
        try:
            await tokens.token()
        except GatewayError as exc:  # messages never carry the secret or a token
            return [Check("token", False, f"{token_url}: {exc}", EXIT_GATEWAY)]
        checks = [Check("token", True, f"issued by {token_url}", EXIT_OK)]
        client = GatewayClient(
            session, gateway.base_url, tokens, request_timeout=limit_s, proxy=gateway_proxy
        )
        status = await client.probe()
        up = probe_result(status) is not ProbeResult.DOWN
        answers = "answers" if up else "does not answer (down or refusing)"
        detail = f"{gateway.base_url}{_through(gateway_proxy)} {answers}"
        checks.append(Check("gateway", up, detail, EXIT_GATEWAY))
        return checks


def _through(proxy: Proxy | None) -> str:
    """`` through <proxy>`` (never its credentials), or nothing for a direct connection."""
    return "" if proxy is None else f" through {proxy}"
