"""What the operator commands (``inspect``, ``redrive``, ``demo``) share: their settings, the
brokers they talk to, the one line that says why Kafka failed, and job states read from the
changelog.

Operator tools never start the embedded development broker and print their own results on
stdout; the library's logs are only for trouble.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from consumer.config import Settings, load_settings
from consumer.domain.retention import StoredJob
from consumer.domain.settled import SettledJob
from consumer.errors import ConfigError, KafkaAccessDenied, KafkaSecurityError, TopicLayoutError
from consumer.kafka.admin import existing_partition_count
from consumer.kafka.connection import client_kwargs
from consumer.kafka.diagnose import explain
from consumer.kafka.partitioning import hashes_to
from consumer.observability.logging import configure_logging
from consumer.state.recovery import restore

#: Exit code of a command that could not do its work because of Kafka or its topics.
EXIT_KAFKA = 3
#: What a command catches as Kafka trouble (reported by :func:`kafka_trouble`).
KAFKA_TROUBLE = (KafkaAccessDenied, KafkaSecurityError, KafkaError, TopicLayoutError, OSError)


def tool_settings() -> Settings | None:
    """Settings for an operator tool: invalid ones (or no broker) are printed, not raised."""
    try:
        settings = load_settings()
        bootstrap_servers(settings)
    except ConfigError as exc:
        print(f"basicsync: {exc}", file=sys.stderr)
        return None
    level = "debug" if settings.observability.log_level == "debug" else "warning"
    configure_logging(settings.observability.log_format, level)
    return settings


def bootstrap_servers(settings: Settings) -> list[str]:
    """The brokers; operator tools never start the embedded development broker."""
    if settings.kafka.bootstrap_servers is None:
        raise ConfigError(
            "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS is not set (this command needs a running broker)"
        )
    return settings.kafka.bootstrap_servers


def kafka_failure(exc: BaseException, settings: Settings) -> str:
    """What went wrong, with its cause (see consumer.kafka.diagnose)."""
    return asyncio.run(explain(exc, settings.kafka.bootstrap_servers))


def kafka_trouble(command: str, exc: BaseException, settings: Settings) -> int:
    """Say on stderr, in one line, why Kafka failed ``basicsync COMMAND``; :data:`EXIT_KAFKA`.

    A denied ACL or a refused connection already names its cause; anything else gets the
    reachability of the bootstrap servers added (:func:`kafka_failure`).
    """
    if isinstance(exc, KafkaAccessDenied | KafkaSecurityError):
        detail = str(exc)
    else:
        detail = f"Kafka failed: {kafka_failure(exc, settings)}"
    print(f"basicsync {command}: {detail}", file=sys.stderr)
    return EXIT_KAFKA


async def read_job_states(
    settings: Settings, job_ids: Iterable[str]
) -> dict[str, tuple[int, StoredJob]]:
    """``clientJobId -> (changelog partition, state)`` for the jobs the changelog holds (a
    forgotten job's state is its marker); see :func:`read_changelog`."""
    found, _ = await read_changelog(settings, job_ids)
    return found


async def read_changelog(
    settings: Settings, job_ids: Iterable[str]
) -> tuple[dict[str, tuple[int, StoredJob]], dict[str, str]]:
    """The states of :func:`read_job_states`, and ``clientJobId -> why`` for those of the
    jobs whose value cannot be read (the consumer refuses their events).

    A job lives in the changelog partition its key hashes to (the Java default partitioner,
    like the input topics), so each needed partition is read once, from the beginning to its
    current end, whatever the number of jobs in it; no group joins, nothing is committed.
    """
    kafka = client_kwargs(settings.kafka, bootstrap_servers(settings))
    topic = settings.state_topic
    partitions = await existing_partition_count(kafka, topic, "changelog")
    where = {job: hashes_to(job.encode(), partitions) for job in job_ids}
    states, report = await restore(
        lambda **extra: AIOKafkaConsumer(**kafka, group_id=None, **extra),
        topic,
        set(where.values()),
        keep_settled=False,
    )
    found: dict[str, tuple[int, StoredJob]] = {}
    for job, partition in where.items():
        held = states.get(partition, {}).get(job)
        if held is not None and not isinstance(held, SettledJob):  # none: keep_settled=False
            found[job] = (partition, held)
    unreadable = {
        job: why
        for job, partition in where.items()
        if (why := report.unreadable.get(partition, {}).get(job)) is not None
    }
    return found, unreadable
