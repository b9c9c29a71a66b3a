"""The Kafka ACLs the service needs, as data: the one list that grants, docs and tests share.

A broker with an authorizer (``allow.everyone.if.no.acl.found=false``) must allow the service's
principal exactly these operations. ``deploy/k8s/kafkauser.yaml`` declares the same list for
the default settings (a test keeps the two equal), the security tests grant it to their users
on a real broker, and each entry marked ``run`` is proven necessary by a test that leaves it
out. Operations another one implies are not listed: Read and Write imply Describe on the same
resource (Kafka's authorizer rule), which covers metadata, offsets lookups and the
transaction coordinator lookup.

Why each one:

- ``Read`` on every input topic, and on the changelog (its partitions are restored). Kafka's
  ACLs cannot match a regular expression: under ``BASICSYNC_TOPICS__INPUT_PATTERN`` the grant
  is a PREFIXED one on the pattern's literal start (``jobs\\..*`` gives ``jobs.``), or on every
  topic (``*``) when the pattern has none. Read implies the Describe that listing the
  matching topics needs;
- ``Write`` on the changelog, the success topic and the failure topic. An idempotent producer
  needs no ``IdempotentWrite`` on the cluster: since Kafka 3.0, ``Write`` on a topic suffices;
- ``Read`` on the consumer group (join, heartbeat, commit and fetch offsets, and
  ``send_offsets_to_transaction``);
- ``Write`` on the transactional ids ``<group_id>.<partition>`` (a PREFIXED pattern
  ``<group_id>.``): one transactional producer per owned input partition fences zombies;
- ``Create`` on the changelog and result topics when ``BASICSYNC_KAFKA__CREATE_TOPICS=true``;
- for the operator commands: ``DescribeConfigs`` on the changelog (``check`` reads its
  ``cleanup.policy``; ``run`` reads it too when granted, and warns when not), ``Read`` on the
  failure topic and ``Write`` on the input topics (``redrive`` re-sends failed events; it posts
  result records with the ``Write`` above).

This module is pure data over :class:`~consumer.config.Settings`: it imports no Kafka client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from consumer.config import Settings


class ResourceType(IntEnum):
    """Kafka's resource type codes (``org.apache.kafka.common.resource.ResourceType``)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Operation(IntEnum):
    """Kafka's ACL operation codes (``org.apache.kafka.common.acl.AclOperation``)."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10


class PatternType(IntEnum):
    """How the resource name matches (``org.apache.kafka.common.resource.PatternType``)."""

    LITERAL = 3
    PREFIXED = 4


class Purpose(StrEnum):
    """Who needs the ACL: the consumer (``run``), or only an operator command."""

    run = "run"
    create_topics = "create_topics"
    check = "check"
    redrive = "redrive"


@dataclass(frozen=True, order=True)
class Acl:
    """Allow one operation on one resource pattern (principal and host are the grant's)."""

    resource: ResourceType
    name: str
    operation: Operation
    pattern: PatternType = PatternType.LITERAL
    purpose: Purpose = Purpose.run

    def describe(self) -> str:
        """``Read on topic 'x'`` (resource names as Kafka's error messages show them)."""
        what = _RESOURCE_NAMES[self.resource]
        prefixed = " (prefix)" if self.pattern is PatternType.PREFIXED else ""
        return f"{self.operation.name.title().replace('_', '')} on {what} {self.name!r}{prefixed}"


_RESOURCE_NAMES = {
    ResourceType.TOPIC: "topic",
    ResourceType.GROUP: "group",
    ResourceType.CLUSTER: "cluster",
    ResourceType.TRANSACTIONAL_ID: "transactional id",
}


def transactional_id_prefix(settings: Settings) -> str:
    """Every transactional id of the service starts with this: ``<group_id>.``."""
    return f"{settings.kafka.group_id}."


def required_acls(settings: Settings, *, tools: bool = True) -> tuple[Acl, ...]:
    """The ACLs for ``settings``, sorted; ``tools=False`` leaves out the operator commands'."""
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    read, write = Operation.READ, Operation.WRITE
    changelog, succeeded, failed = (
        settings.state_topic,
        settings.topics.succeeded,
        settings.topics.failed,
    )
    inputs = input_resources(settings)
    acls = {
        *(Acl(topic, name, read, pattern) for name, pattern in inputs),
        Acl(topic, changelog, read),
        Acl(topic, changelog, write),
        Acl(topic, succeeded, write),
        Acl(topic, failed, write),
        Acl(group, settings.kafka.group_id, read),
        Acl(txn, transactional_id_prefix(settings), write, PatternType.PREFIXED),
    }
    if settings.kafka.create_topics:
        acls |= {
            Acl(topic, name, Operation.CREATE, purpose=Purpose.create_topics)
            for name in (changelog, succeeded, failed)
        }
    if tools:
        acls |= {
            Acl(topic, changelog, Operation.DESCRIBE_CONFIGS, purpose=Purpose.check),
            *(
                Acl(topic, name, Operation.DESCRIBE_CONFIGS, kind, Purpose.check)
                for name, kind in inputs
            ),
            Acl(topic, failed, read, purpose=Purpose.redrive),
            *(Acl(topic, name, write, kind, Purpose.redrive) for name, kind in inputs),
        }
    return tuple(sorted(acls))


#: What ends a regular expression's literal start (``\\`` is handled apart).
_REGEX_SYNTAX = frozenset(".^$*+?{}[]|()")
#: What makes the character before it optional or repeated.
_QUANTIFIERS = frozenset("*+?{")


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """The text every name ``pattern`` matches whole starts with, and whether that text is
    the whole pattern (then it matches one name). Conservative: an escape other than a
    punctuation mark ends the prefix (``\\d`` is a class, not a letter)."""
    if _alternates_at_top(pattern):
        return "", False  # ``a|b``: the names need not share a start
    prefix: list[str] = []
    index = 1 if pattern.startswith("^") else 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and not pattern[index + 1].isalnum():
            literal, step = pattern[index + 1], 2
        elif char == "\\" or char in _REGEX_SYNTAX:
            break
        else:
            literal, step = char, 1
        following = pattern[index + step] if index + step < len(pattern) else ""
        if following in _QUANTIFIERS:
            break  # the character is optional or repeated: not part of every name
        prefix.append(literal)
        index += step
    whole = index == len(pattern) or pattern[index:] == "$"
    return "".join(prefix), whole


def _alternates_at_top(pattern: str) -> bool:
    """Whether ``pattern`` has a ``|`` outside every group and character class."""
    depth, in_class, escaped = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


def input_resources(settings: Settings) -> list[tuple[str, PatternType]]:
    """The topic resources that cover the inputs: each listed topic, or what covers the
    pattern's matches (its literal start as a prefix; ``*``, every topic, without one)."""
    pattern = settings.topics.input_pattern
    if pattern is None:
        return [(name, PatternType.LITERAL) for name in settings.topics.input]
    prefix, whole = literal_prefix(pattern)
    if whole:
        return [(prefix, PatternType.LITERAL)]
    if not prefix:
        return [("*", PatternType.LITERAL)]
    return [(prefix, PatternType.PREFIXED)]
