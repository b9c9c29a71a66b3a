"""``basicsync inspect JOB_ID``: a job's state and sync status, read from the changelog.

The changelog is the source of truth for job state (docs/contract.md §3). A job lives in the
changelog partition its key hashes to (the Java default partitioner, like the input topics), so
only that one partition is read, from the beginning to its current end; the consumer is not
disturbed (no group, nothing committed). Prints one JSON object on stdout.

Exit codes: 0 the job is known, 1 it is not (or its value cannot be read: the consumer refuses
its events, and this says why), 2 invalid settings, 3 Kafka unreachable or the changelog topic
missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from consumer.commands.tooling import (
    KAFKA_TROUBLE,
    kafka_trouble,
    read_changelog,
    tool_settings,
)
from consumer.domain.basicsync import body_sha256, encode_body
from consumer.domain.retention import ForgottenJob, StoredJob
from consumer.kafka.access import explained
from consumer.observability.logging import bound_record

EXIT_UNKNOWN = 1
EXIT_SETTINGS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", metavar="JOB_ID", help="the clientJobId")
    parser.add_argument(
        "--body", action="store_true", help="also print the basicSync body the state would post"
    )


def main(args: argparse.Namespace) -> int:
    settings = tool_settings()
    if settings is None:
        return EXIT_SETTINGS
    try:
        with bound_record(client_job_id=args.job_id):
            read = read_changelog(settings, [args.job_id])
            found, unreadable = asyncio.run(explained(read, settings))
    except KAFKA_TROUBLE as exc:
        return kafka_trouble("inspect", exc, settings)
    if args.job_id in unreadable:
        print(
            f"basicsync inspect: the changelog value of job {args.job_id!r} cannot be read "
            f"({unreadable[args.job_id]}); its events get job_state_unreadable "
            '(docs/operations.md, "Upgrading")',
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    if args.job_id not in found:
        print(f"basicsync inspect: unknown job {args.job_id!r}", file=sys.stderr)
        return EXIT_UNKNOWN
    partition, state = found[args.job_id]
    print(json.dumps(describe(state, partition, body=args.body), indent=2))
    return 0


def describe(state: StoredJob, partition: int, *, body: bool) -> dict[str, Any]:
    """The sync status of ``state`` as JSON data (camelCase, like the result records)."""
    if isinstance(state, ForgottenJob):
        return {
            "clientJobId": state.client_job_id,
            "changelogPartition": partition,
            "forgotten": True,
            "forgottenAt": _iso(state.forgotten_at),
            "status": state.status,
            "version": state.version,
            "jobId": state.job_id,
        }
    encoded = encode_body(state)
    sha = body_sha256(encoded)
    out: dict[str, Any] = {
        "clientJobId": state.client_job_id,
        "changelogPartition": partition,
        "status": state.status,
        "version": state.version,
        "syncedVersion": state.synced_version,
        "syncedSha256": state.synced_sha256,
        "bodySha256": sha,
        # The consumer records a final outcome (accepted, or reported as failed) as "synced",
        # so this says the consumer has nothing left to do for the job, not that WorkfloPlus
        # accepted it: the result topics say that.
        "settled": state.version == state.synced_version and sha == state.synced_sha256,
        "jobId": state.job_id,
        "firstUnsyncedAt": _iso(state.first_unsynced_at),
        "updatedAt": _iso(state.updated_at),
        "syncedAt": _iso(state.synced_at),
    }
    if body:
        out["body"] = json.loads(encoded)
    return out


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
