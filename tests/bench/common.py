"""Small pieces the benchmark's runs share: their command-line contract, reading /proc, and
the fold of fetched records into job documents that the peers and the live ceiling all do.

Every run except ours is a child process started as ``python -m tests.bench.<module>`` with
the options of :func:`run_arguments`; it prints one JSON line starting with ``RESULT `` when
it has something to report (ceiling A: when it has read every event); runs that finish on
their own then wait for SIGTERM, so their peak RSS can still be read.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumer.domain.events import InvalidEvent, decode_event
from consumer.domain.job import JobState, apply, is_postable

RESULT_PREFIX = "RESULT "
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"


def run_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", default="127.0.0.1:17092")
    parser.add_argument("--topics", default="", help="comma-separated input topics")
    parser.add_argument("--group", default="bench")
    parser.add_argument("--sandbox", default="", help="sandbox base URL")
    parser.add_argument("--events", type=int, default=0, help="events in the workload")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bodies", default="", help="file of expected bodies, one per line")
    parser.add_argument("--state-dir", default="", help="for runs that keep local state")
    return parser


def report(**fields: Any) -> None:
    """Print the run's result line (flushed, so the parent sees it at once)."""
    print(RESULT_PREFIX + json.dumps({"at": time.time(), **fields}), flush=True)


def linger() -> None:
    """Stay alive (so the parent can read this process's peak RSS) until SIGTERM ends it."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pause()


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water resident set (``VmHWM``), or None when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fold_records(records: Iterable[Any], jobs: dict[str, JobState]) -> Iterator[JobState]:
    """Decode each record and apply it to its job in ``jobs`` with our pure reducer (so the
    documents are right and assembling them costs what it costs ours); yields each new state
    that can be posted (WorkfloPlus answers 400 without workflowId). Bad records are skipped."""
    for record in records:
        try:
            event = decode_event(record.key, record.value, record.headers)
        except InvalidEvent:
            continue
        state = apply(jobs.get(event.subject), event, datetime.now(UTC))
        if isinstance(state, JobState):
            jobs[event.subject] = state
            if is_postable(state):
                yield state
