"""Topic checks at start: the input topics are co-partitioned and internal topics exist.

Partitioning is the scaling unit (docs/contract.md §3), so a mismatch here is fatal: a job whose
events land in different partition numbers of different topics could be owned by two members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAuthorizationFailedError, for_code

from consumer.errors import ConfigsUnread, TopicLayoutError
from consumer.kafka.input_topics import (
    InputSelection,
    InputTopics,
    select_inputs,
    starting_partition_count,
)
from consumer.kafka.starting import start_client

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_TOPIC_AUTHORIZATION_FAILED = 29


#: ``segment.ms`` of a changelog this service creates. The log cleaner never compacts the active
#: segment, and the broker default rolls it after 7 days (or 1 GiB): until then a restore reads
#: every write of every job, about ten per job after a backlog, instead of one. With an hour,
#: the cleaner can compact all but the last hour's writes.
CHANGELOG_SEGMENT_MS = 3_600_000


#: How long a topic may be unknown to the broker that describes its configuration. One this
#: start has just created often is, for a moment: the controller has it, that broker's metadata
#: not yet (2 of 3 creations on a local broker answered UNKNOWN_TOPIC_OR_PARTITION at once).
CONFIGS_OF_A_NEW_TOPIC_WAIT_S = 10.0
_DESCRIBE_AGAIN_AFTER_S = 0.1
_CLUSTER_AUTHORIZATION_FAILED = 31


async def described_configs(
    admin: AIOKafkaAdminClient,
    kind: ConfigResourceType,
    name: str,
    *,
    unknown_for_s: float = CONFIGS_OF_A_NEW_TOPIC_WAIT_S,
) -> dict[str, str]:
    """Every config entry of a topic or broker, as the broker reports it (defaults included).

    An unknown topic is asked again for ``unknown_for_s`` (see
    :data:`CONFIGS_OF_A_NEW_TOPIC_WAIT_S`) before it counts as an answer: read as a refusal,
    a changelog created at start was reported as "not granted" and left unchecked.

    Raises :class:`ConfigsUnread` when the cluster will not say.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + unknown_for_s
    while True:
        code, found = await _described_once(admin, kind, name)
        if code == 0:
            return found
        if code == _UNKNOWN_TOPIC and loop.time() < deadline:
            await asyncio.sleep(_DESCRIBE_AGAIN_AFTER_S)
            continue
        what = f"{kind.name.lower()} {name}"
        if code in (_TOPIC_AUTHORIZATION_FAILED, _CLUSTER_AUTHORIZATION_FAILED):
            raise ConfigsUnread(f"DescribeConfigs on {what} is not granted", denied=True)
        answer = for_code(code).message
        raise ConfigsUnread(f"DescribeConfigs on {what} answered {answer}", denied=False)


async def _described_once(
    admin: AIOKafkaAdminClient, kind: ConfigResourceType, name: str
) -> tuple[int, dict[str, str]]:
    """The answer's error code, and the entries that have a value."""
    responses: Any = await admin.describe_configs([ConfigResource(kind, name)])
    found: dict[str, str] = {}
    for code, _message, _type, _name, entries in responses[0].resources:
        if code != 0:
            return int(code), {}
        for entry_name, value, *_ in entries:
            if value is not None:
                found[str(entry_name)] = str(value)
    return 0, found


def changelog_policy_problem(config: Mapping[str, str]) -> str | None:
    """What is wrong with a changelog's retention, or None.

    The changelog is the only copy of a job's state. Deleted by retention (``delete``, or
    ``compact,delete`` with a finite ``retention.ms`` or ``retention.bytes``), a state a
    restore no longer finds makes the job's next events look like a new job's, posted alone
    over everything WorkfloPlus holds. A job's end is forgotten by this service itself, with a
    marker (retention settings). Kafka reads a negative limit as none.
    """
    policy = config.get("cleanup.policy", "delete")  # the broker's default
    policies = {part.strip() for part in policy.split(",")}
    fix = "set cleanup.policy=compact"
    if "compact" not in policies:
        return f"cleanup.policy is {policy!r}: a job's state would be deleted by age; {fix}"
    if "delete" not in policies:
        return None
    age = config.get("retention.ms", "604800000")  # the broker's default: 7 days
    if not _unlimited(age):
        return (
            f"cleanup.policy is {policy!r} with retention.ms {age}: a job's state older "
            f"than that would be deleted; {fix} (or retention.ms=-1)"
        )
    size = config.get("retention.bytes", "-1")
    if not _unlimited(size):
        return (
            f"cleanup.policy is {policy!r} with retention.bytes {size}: the oldest states of "
            f"a partition that holds more would be deleted; {fix} (or retention.bytes=-1)"
        )
    return None


def input_policy_problem(config: Mapping[str, str]) -> str | None:
    """What is wrong with an input topic's cleanup policy, or None.

    A compacted input keeps only the last event of each key (a job) once its segment closes.
    A member reading it late, a new group or one reset to the earliest offset (how a lost
    changelog is rebuilt), assembles a job from that last event alone and posts it over the
    whole document WorkfloPlus holds, and no gap says so: the offsets between are simply
    gone. Deletion by age drops the oldest events whole, which the consumer notices
    (``input_records_lost``).
    """
    policy = config.get("cleanup.policy", "delete")  # the broker's default
    if "compact" not in {part.strip() for part in policy.split(",")}:
        return None
    return (
        f"cleanup.policy is {policy!r}: Kafka keeps only each job's last event once a segment "
        "closes, so a member that reads it late (or a group started from the earliest "
        "offset) assembles a job from that event alone and posts it over the whole document; "
        "set cleanup.policy=delete"
    )


def _unlimited(limit: str) -> bool:
    """A retention limit Kafka never applies (negative); an unreadable one counts as set."""
    try:
        return int(limit) < 0
    except ValueError:
        return False


@dataclass(frozen=True)
class TopicPlan:
    """The topics the service needs and how the missing ones are created."""

    inputs: InputTopics
    changelog: str
    results: tuple[str, ...]
    create_missing: bool
    replication_factor: int
    #: ``max.message.bytes`` of a changelog this service creates (a job state is one record)
    changelog_max_message_bytes: int | None = None


async def partition_counts(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic that exists; missing topics are left out.

    A topic we may not describe raises ``TopicAuthorizationFailedError`` (a missing ACL, which
    ``consumer.kafka.access`` words for the operator), not a layout error.
    """
    counts: dict[str, int] = {}
    for meta in await admin.describe_topics(list(topics)):
        if meta["error_code"] == 0:
            counts[meta["topic"]] = len(meta["partitions"])
        elif meta["error_code"] == _TOPIC_AUTHORIZATION_FAILED:
            raise TopicAuthorizationFailedError(meta["topic"])
        elif meta["error_code"] != _UNKNOWN_TOPIC:
            raise TopicLayoutError(
                f"cannot describe topic {meta['topic']}: error {meta['error_code']}"
            )
    return counts


async def input_counts(
    admin: AIOKafkaAdminClient, inputs: InputTopics
) -> tuple[list[str], dict[str, int]]:
    """The input topics (the list, or those a pattern matches now) and the partition count of
    each that exists: what the start, the pattern's watch and ``check`` judge the inputs by."""
    existing = await admin.list_topics() if inputs.pattern is not None else ()
    matched = inputs.matching(existing)
    return matched, await partition_counts(admin, matched)


async def existing_partition_count(kafka: dict[str, Any], topic: str, what: str) -> int:
    """Partition count of ``topic`` with a short-lived admin client; fatal when it is missing."""
    admin = AIOKafkaAdminClient(**kafka)
    try:
        await start_client(admin.start())
        counts = await partition_counts(admin, [topic])
    finally:
        await admin.close()
    if topic not in counts:
        raise TopicLayoutError(f"{what} topic {topic} does not exist")
    return counts[topic]


async def create_topics(
    admin: AIOKafkaAdminClient,
    topics: dict[str, tuple[int, dict[str, str]]],
    replication_factor: int,
) -> None:
    """Create ``name -> (partitions, config)``; a topic that already exists is fine."""
    if not topics:
        return
    response: Any = await admin.create_topics(
        [
            NewTopic(name, partitions, replication_factor, topic_configs=config)
            for name, (partitions, config) in topics.items()
        ]
    )
    for name, code, *rest in response.topic_errors:
        if code == _TOPIC_AUTHORIZATION_FAILED:
            raise TopicAuthorizationFailedError(name)
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            message = rest[0] if rest else ""
            raise TopicLayoutError(f"cannot create topic {name}: error {code} {message}")


@dataclass(frozen=True)
class TopicLayout:
    """What the start found: the partition count, and the input topics read and refused."""

    partition_count: int
    inputs: InputSelection


async def ensure_topology(admin: AIOKafkaAdminClient, plan: TopicPlan) -> TopicLayout:
    """Check co-partitioning, create what is missing, and return the layout to run with."""
    _, inputs = await input_counts(admin, plan.inputs)
    counts = {**inputs, **await partition_counts(admin, [plan.changelog, *plan.results])}
    partitions = starting_partition_count(plan.inputs, inputs, counts.get(plan.changelog))
    changelog_config = {"cleanup.policy": "compact", "segment.ms": str(CHANGELOG_SEGMENT_MS)}
    if plan.changelog_max_message_bytes is not None:
        changelog_config["max.message.bytes"] = str(plan.changelog_max_message_bytes)
    wanted = {
        plan.changelog: (partitions, changelog_config),
        **{topic: (partitions, {}) for topic in plan.results},
    }
    to_create = {topic: spec for topic, spec in wanted.items() if topic not in counts}
    if to_create and not plan.create_missing:
        raise TopicLayoutError(
            f"topics missing and creation disabled: {', '.join(to_create)}; create them or set "
            "BASICSYNC_KAFKA__CREATE_TOPICS=true"
        )
    await create_topics(admin, to_create, plan.replication_factor)
    changelog_count = counts.get(plan.changelog, partitions)
    if changelog_count != partitions:
        raise TopicLayoutError(
            f"changelog {plan.changelog} has {changelog_count} partitions but the inputs have "
            f"{partitions}; the changelog needs one partition per input partition"
        )
    selection = select_inputs(plan.inputs, inputs, partitions)
    if not selection.read:
        raise TopicLayoutError(
            f"no topic the input {plan.inputs.describe()} matches has the changelog's "
            f"{partitions} partitions: "
            + ", ".join(f"{t}={n}" for t, n in selection.refused.items())
        )
    return TopicLayout(partitions, selection)


def changed_layout(
    counts: Mapping[str, int | None], assigned: Iterable[int], started_with: int
) -> TopicLayoutError | None:
    """The error to stop with when the input topics no longer have ``started_with`` partitions.

    Partition ``p`` of the changelog holds the jobs whose key the inputs' partition count put
    on ``p``. Partitions added while the consumer runs move keys: a job's next events land on
    a partition whose owner does not hold its state, and would post the job from those events
    alone over what WorkfloPlus holds. ``counts`` is each input's partition count as the group
    member's metadata has it now (None: not known yet), ``assigned`` what this rebalance gave
    it: a partition beyond ``started_with`` is the same news from the group leader's metadata.
    """
    grown = {topic: count for topic, count in counts.items() if count not in (None, started_with)}
    beyond = sorted(partition for partition in assigned if partition >= started_with)
    if not grown and not beyond:
        return None
    now = ", ".join(f"{topic}={count}" for topic, count in grown.items()) or (
        f"partition {beyond[0]} assigned"
    )
    return TopicLayoutError(
        f"the input topics had {started_with} partitions when this member started and the "
        f"changelog has as many; now {now}. A job's events would land where its state is not, "
        'so nothing more is read: see docs/operations.md, "Changing the partition count"'
    )
