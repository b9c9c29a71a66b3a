"""``basicsync redrive``: drive records of the failure topic again. Dry run unless ``--apply``.

Reads the failure topic from the beginning (or ``--since`` an offset or a time) to its end as of
the start, selects records by ``--reason`` and/or ``--job`` (both repeatable; nothing given
selects everything), and prints one line per record: what it does (or would do) and why.

**Input failures** (records with ``source``: ``invalid_event``, ``key_mismatch``,
``unknown_event_type``, ``oversized_event``, ``invalid_transition``, ``job_forgotten``) are
produced again with their original key, headers and value bytes to ``source.topic`` (or
``--to``), in the order they failed, each source message once. Fix the producer or the data
first: an event re-sent as it was fails again with the same reason (a new failure record). A
failure record carries the value only up to a bound (``source.truncated``): then the original
is re-read from its coordinates (topic, partition, offset) and checked against
``source.valueSha256``; when the topic no longer has it (retention, compaction) the command
says so and that message is not re-sent.

**Sync failures** (``rejected_by_gateway``, ``retries_exhausted``, ``missing_job_metadata``) are
re-synced by posting the job's *current* state from the changelog to WorkfloPlus directly, with
the real gateway client, then publishing a success or failure record as the consumer does.
Nothing sent to Kafka could do this: the consumer records a failed version as settled (its body
hash becomes ``syncedSha256``) and never posts a body equal to the settled one again, and
re-sent input events are duplicates by event id, so they change nothing. A control event type
would, but it would widen the public input contract for an operator action.

Posting beside the consumer must keep *one request in flight per job, never older over newer*.
So a job is posted only when the consumer has nothing to do for it: its changelog state is
settled (``version == syncedVersion``) at exactly the version the failure names (the latest
failure of the job among the selected records). Anything else is skipped and says why: a newer
version exists (the consumer already posted or reported it), the job still lacks ``workflowId``
(the consumer posts it when an event brings one), or the consumer has unsynced changes. The
state is read again after the request; if a new event arrived meanwhile the command reports the
race and exits 1: the consumer posts the newer state at most ``max_delay`` later, which is newer
than ours, unless its request overtook ours (then run ``inspect`` and redrive again). The
changelog is not written (its partitions have one writer, their owner); the consumer's settled
hash already equals the body posted, so it will not post it again either.

Exit codes: 0 everything selected was done (or, in a dry run, could be), skips included;
1 a send or request failed or raced; 2 invalid settings or options; 3 Kafka or topics.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from consumer.commands.tooling import (
    KAFKA_TROUBLE,
    bootstrap_servers,
    kafka_trouble,
    read_job_states,
    tool_settings,
)
from consumer.config import Settings
from consumer.domain.basicsync import payload
from consumer.domain.job import JobState, is_postable
from consumer.domain.results import FailureReason, FailureRecord, SourceInfo, SuccessRecord
from consumer.domain.retention import ForgottenJob, StoredJob
from consumer.errors import ConfigError
from consumer.gateway.auth import ClientCredentialsTokenProvider
from consumer.gateway.client import Accepted, GatewayClient, Rejected
from consumer.gateway.proxy import gateway_proxies
from consumer.gateway.tls import gateway_ssl
from consumer.kafka.access import explained
from consumer.kafka.admin import existing_partition_count
from consumer.kafka.connection import client_kwargs
from consumer.kafka.diagnose import describe
from consumer.kafka.publisher import ResultPublisher
from consumer.kafka.starting import start_client
from consumer.observability.logging import bound_record

EXIT_FAILED = 1
EXIT_USAGE = 2

SYNC_REASONS = frozenset(
    {
        FailureReason.rejected_by_gateway,
        FailureReason.retries_exhausted,
        FailureReason.missing_job_metadata,
    }
)


@dataclass(frozen=True)
class Since:
    """Where to start reading each failure partition: an offset, or a time."""

    offset: int | None = None
    time: datetime | None = None


def parse_since(text: str) -> Since:
    """An integer offset, or an ISO 8601 time (UTC when no zone is given)."""
    if text.isdigit():
        return Since(offset=int(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an offset or an ISO 8601 time") from None
    return Since(time=when if when.tzinfo else when.replace(tzinfo=UTC))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        action="append",
        choices=[reason.value for reason in FailureReason],
        help="select records with this reason (repeatable)",
    )
    parser.add_argument("--job", action="append", help="select this clientJobId (repeatable)")
    parser.add_argument(
        "--since",
        type=parse_since,
        default=Since(),
        help="start at this offset (every partition) or ISO 8601 time; default: the beginning",
    )
    parser.add_argument("--to", metavar="TOPIC", help="re-send input failures to TOPIC instead")
    parser.add_argument("--apply", action="store_true", help="do it (default: dry run)")


@dataclass(frozen=True)
class Failure:
    """A failure record and where it sits on the failure topic."""

    partition: int
    offset: int
    record: FailureRecord


def main(args: argparse.Namespace) -> int:
    settings = tool_settings()
    if settings is None:
        return EXIT_USAGE
    try:
        return asyncio.run(explained(_redrive(settings, args), settings))
    except BrokenPipeError:
        raise  # stdout closed (`redrive | head`): the command line's business, not Kafka's
    except ConfigError as exc:
        print(f"basicsync redrive: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KAFKA_TROUBLE as exc:
        return kafka_trouble("redrive", exc, settings)


class Originals:
    """Re-reads input messages from their coordinates (for failure records that carry only a
    prefix of the value); one consumer for the whole run, started when first needed."""

    def __init__(self, kafka: dict[str, Any]) -> None:
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self, source: SourceInfo) -> Message | str:
        """The original ``(key, value, headers)``, or why it cannot be had."""
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                **self._kafka,
                group_id=None,
                enable_auto_commit=False,
                max_partition_fetch_bytes=64 * 1024 * 1024,
            )
            await start_client(self._consumer.start())
        consumer = self._consumer
        tp = TopicPartition(source.topic, source.partition)
        # Before the assignment, which long-polls a partition read to its end (design notes §8).
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= source.offset < end:
            return f"the topic now holds offsets {first} to {end - 1} only (retention)"
        consumer.assign([tp])
        consumer.seek(tp, source.offset)
        while True:
            batch = await consumer.getmany(tp, timeout_ms=1_000, max_records=1)
            for message in batch.get(tp, []):
                if message.offset != source.offset:
                    return "the topic no longer has that offset (compaction)"
                headers = [(k, v) for k, v in message.headers]
                found: Message = (message.key, message.value, headers)
                return check_original(source, found) or found
            if await consumer.position(tp) >= end:
                return "the topic no longer has that offset"

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


#: ``(key, value, headers)`` of a Kafka message.
Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def check_original(source: SourceInfo, message: Message) -> str | None:
    """Why ``message`` is not the original the failure record describes, or None if it is."""
    value = message[1]
    size = None if value is None else len(value)
    if source.value_size is not None and size != source.value_size:
        return f"the record there has {size} bytes, the original had {source.value_size}"
    if source.value_sha256 is not None and (
        value is None or hashlib.sha256(value).hexdigest() != source.value_sha256
    ):
        return "the record there differs from the original (sha256)"
    return None


async def _redrive(settings: Settings, args: argparse.Namespace) -> int:
    kafka = client_kwargs(settings.kafka, bootstrap_servers(settings))
    failures = await read_failures(kafka, settings.topics.failed, args.since)
    chosen = select(failures, args.reason, args.job)
    inputs = unique_sources([f for f in chosen if f.record.source is not None])
    syncs = latest_per_job(
        [f for f in chosen if f.record.source is None and f.record.reason in SYNC_REASONS]
    )
    verb = "" if args.apply else "would "
    print(
        f"{len(failures)} failure records read, {len(chosen)} selected: {len(inputs)} input "
        f"events to re-send, {len(syncs)} jobs to re-sync",
        flush=True,
    )
    ok = True
    producer = AIOKafkaProducer(**kafka, acks="all", max_request_size=16 * 1024 * 1024)
    originals = Originals(kafka)
    try:
        await start_client(producer.start())
        for failure in inputs:
            ok &= await _resend(producer, originals, failure, args.to, apply=args.apply, verb=verb)
        if syncs:
            publisher = ResultPublisher(producer, settings.topics.succeeded, settings.topics.failed)
            ok &= await _resync_all(settings, publisher, syncs, apply=args.apply, verb=verb)
        await producer.flush()
    finally:
        await originals.close()
        await producer.stop()
    if not args.apply and (inputs or syncs):
        print("dry run: nothing was sent; pass --apply to do it")
    return 0 if ok else EXIT_FAILED


async def read_failures(kafka: dict[str, Any], topic: str, since: Since) -> list[Failure]:
    """Every failure record from ``since`` to the end of ``topic`` as of now, in offset order
    per partition (unreadable records are reported on stderr and left out)."""
    partitions = await existing_partition_count(kafka, topic, "failure")
    consumer = AIOKafkaConsumer(
        **kafka, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    failures: list[Failure] = []
    try:
        await start_client(consumer.start())
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        # Before the assignment, which long-polls a partition read to its end (design notes §8).
        end = await consumer.end_offsets(tps)
        start = await _start_offsets(consumer, tps, since, end)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5_000)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= end[tp] or message.value is None:
                        continue
                    try:
                        record = FailureRecord.model_validate_json(message.value)
                    except ValidationError:
                        print(f"skip unreadable record {topic}[{tp.partition}]@{message.offset}")
                        continue
                    failures.append(Failure(tp.partition, message.offset, record))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    failures.sort(key=lambda f: (f.partition, f.offset))
    return failures


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since: Since,
    end: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Where each partition is read from: its beginning, or ``since`` when that is later."""
    first: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    if since.offset is not None:
        return {tp: min(max(first[tp], since.offset), end[tp]) for tp in tps}
    if since.time is not None:
        millis = int(since.time.timestamp() * 1000)
        found = await consumer.offsets_for_times({tp: millis for tp in tps})
        return {tp: at.offset if (at := found.get(tp)) is not None else end[tp] for tp in tps}
    return first


def select(
    failures: Iterable[Failure], reasons: Sequence[str] | None, jobs: Sequence[str] | None
) -> list[Failure]:
    """Records matching every given filter (a filter not given matches all)."""
    return [
        f
        for f in failures
        if (not reasons or f.record.reason.value in reasons)
        and (not jobs or f.record.client_job_id in jobs)
    ]


def unique_sources(failures: Iterable[Failure]) -> list[Failure]:
    """Each source message once (a crash may have published its failure record twice)."""
    seen: set[tuple[str, int, int]] = set()
    unique: list[Failure] = []
    for failure in failures:
        source = failure.record.source
        assert source is not None
        where = (source.topic, source.partition, source.offset)
        if where not in seen:
            seen.add(where)
            unique.append(failure)
    return unique


def latest_per_job(failures: Iterable[Failure]) -> dict[str, Failure]:
    """The latest sync failure of each job (by state version, then failure time)."""
    latest: dict[str, Failure] = {}
    for failure in failures:
        job = failure.record.client_job_id
        if job is None:
            continue
        held = latest.get(job)
        if held is None or _order(failure) >= _order(held):
            latest[job] = failure
    return latest


def _order(failure: Failure) -> tuple[int, datetime]:
    return (failure.record.state_version or 0, failure.record.failed_at)


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def original_message(
    source: SourceInfo,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` exactly as the input message had them."""
    headers = [(h.key, _unb64(h.value) or b"") for h in source.headers]
    return _unb64(source.key), _unb64(source.value), headers


async def _resend(
    producer: AIOKafkaProducer,
    originals: Originals,
    failure: Failure,
    to: str | None,
    *,
    apply: bool,
    verb: str,
) -> bool:
    record = failure.record
    source = record.source
    assert source is not None
    if source.truncated:
        found = await originals.read(source)
        if isinstance(found, str):
            print(
                f"cannot re-send {record.reason.value} job={record.client_job_id}: the failure "
                f"record holds only part of it and the original at {source.topic}"
                f"[{source.partition}]@{source.offset} is gone: {found}",
                flush=True,
            )
            return False
        key, value, headers = found
    else:
        key, value, headers = original_message(source)
    topic = to or source.topic
    print(
        f"{verb}re-send {record.reason.value} job={record.client_job_id} "
        f"from {source.topic}[{source.partition}]@{source.offset} to {topic} "
        f"({len(value or b'')} bytes)",
        flush=True,
    )
    if not apply:
        return True
    try:
        with bound_record(
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            client_job_id=record.client_job_id,
        ):
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    except KafkaError as exc:
        print(f"  FAILED: {describe(exc)}", flush=True)
        return False
    return True


async def _resync_all(
    settings: Settings,
    publisher: ResultPublisher,
    syncs: dict[str, Failure],
    *,
    apply: bool,
    verb: str,
) -> bool:
    states = await read_job_states(settings, syncs)
    gateway = settings.gateway
    if gateway.base_url is None:
        print("cannot re-sync: BASICSYNC_GATEWAY__BASE_URL is not set", flush=True)
        return False
    assert gateway.token_url is not None
    assert gateway.client_id is not None
    assert gateway.client_secret is not None
    ok = True
    gateway_proxy, token_proxy = gateway_proxies(gateway)
    connector = aiohttp.TCPConnector(ssl=gateway_ssl(gateway))
    async with aiohttp.ClientSession(connector=connector) as session:
        tokens = ClientCredentialsTokenProvider(
            session,
            gateway.token_url,
            gateway.client_id,
            gateway.client_secret,
            gateway.scope,
            proxy=token_proxy,
        )
        client = GatewayClient(
            session,
            gateway.base_url,
            tokens,
            request_timeout=gateway.request_timeout_s,
            proxy=gateway_proxy,
        )
        for job, failure in syncs.items():
            found = states.get(job)
            skip = why_not(failure.record, found[1] if found else None)
            if skip is not None:
                print(f"skip re-sync {failure.record.reason.value} job={job}: {skip}", flush=True)
                continue
            assert found is not None
            state = found[1]
            assert isinstance(state, JobState)  # why_not skips markers
            print(
                f"{verb}re-sync {failure.record.reason.value} job={job} version={state.version}",
                flush=True,
            )
            if apply:
                with bound_record(client_job_id=job):
                    ok &= await _resync(settings, client, publisher, state)
    return ok


def why_not(failure: FailureRecord, state: StoredJob | None) -> str | None:
    """Why a sync failure must not be re-synced now, or None when it may (see module doc)."""
    if state is None:
        return "not in the changelog (unknown, or forgotten after retention)"
    if isinstance(state, ForgottenJob):
        return (
            f"forgotten after retention at {state.forgotten_at.isoformat()} "
            f"({state.status} at version {state.version})"
        )
    if not is_postable(state):
        return "still has no workflowId; the consumer posts it when an event brings one"
    if state.version != state.synced_version:
        return (
            f"the consumer has unsynced changes (version {state.version}, synced "
            f"{state.synced_version}) and will post them itself"
        )
    if failure.state_version != state.version:
        return (
            f"superseded: failed at version {failure.state_version}, the job is now at "
            f"{state.version} and the consumer has settled that"
        )
    return None


async def _resync(
    settings: Settings, client: GatewayClient, publisher: ResultPublisher, state: JobState
) -> bool:
    job = state.client_job_id
    body, sha = payload(state)
    outcome = await client.post_basic_sync(body)
    now = datetime.now(UTC)
    if isinstance(outcome, Accepted):
        success = SuccessRecord.for_sync(
            state,
            job_id=outcome.job_id,
            http_status=outcome.status,
            attempts=1,
            synced_at=now,
            payload_sha256=sha,
        )
        await (await publisher.succeeded(success))
        print(f"  synced: HTTP {outcome.status}", flush=True)
    elif isinstance(outcome, Rejected):
        failure = FailureRecord.for_sync(
            client_job_id=job,
            reason=FailureReason.rejected_by_gateway,
            message=f"WorkfloPlus rejected the job with HTTP {outcome.status} (redrive)",
            attempts=1,
            state_version=state.version,
            failed_at=now,
            status=outcome.status,
            body=outcome.body_truncated,
        )
        await (await publisher.failed(failure))
        print(f"  rejected again: HTTP {outcome.status}", flush=True)
        return False
    else:  # not final: nothing is published, run redrive again once the gateway is back
        print(f"  not synced: {type(outcome).__name__.lower()} {outcome.reason}", flush=True)
        return False
    after = (await read_job_states(settings, [job])).get(job)
    if after is not None and after[1].version != state.version:
        print(
            f"  raced: version {after[1].version} arrived during the request; the consumer "
            "posts it; check with inspect",
            flush=True,
        )
        return False
    return True
