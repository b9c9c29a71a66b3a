"""What the sandbox remembers: tokens, jobs with their accepted versions, recorded requests and
overlapping in-flight requests. One instance per process (so per worker with ``--workers``).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["created", "updated", "aborted"]


@dataclass(slots=True)
class Token:
    scopes: frozenset[str]
    expires_at: float  # time.monotonic()


@dataclass(slots=True)
class Job:
    """A stored job. ``response`` is the JSON of the stored document plus ``jobId``."""

    client_job_id: str
    job_id: str
    document: dict[str, Any]
    response: bytes
    history: deque[bytes]


@dataclass(slots=True)
class Record:
    """One API request as the sandbox saw it; ``body`` is the raw bytes (None for token calls)."""

    time: float  # epoch seconds
    method: str
    path: str
    client_job_id: str | None
    body: bytes | None
    status: int
    latency_ms: float
    outcome: str | None = None


@dataclass(slots=True)
class InFlight:
    """Current and maximum overlapping basicSync requests, per clientJobId and overall."""

    current: dict[str, int] = field(default_factory=dict)
    max_by_job: dict[str, int] = field(default_factory=dict)
    max_overall: int = 0

    def enter(self, client_job_id: str) -> None:
        count = self.current.get(client_job_id, 0) + 1
        self.current[client_job_id] = count
        if count > self.max_by_job.get(client_job_id, 0):
            self.max_by_job[client_job_id] = count
            if count > self.max_overall:
                self.max_overall = count

    def leave(self, client_job_id: str) -> None:
        count = self.current[client_job_id] - 1
        if count:
            self.current[client_job_id] = count
        else:
            del self.current[client_job_id]


class SandboxState:
    """Jobs, tokens, the request log and the overlap counters of one sandbox process."""

    def __init__(self, *, record_limit: int = 10_000, history_limit: int = 1_000) -> None:
        self.history_limit = history_limit
        self.tokens: dict[str, Token] = {}
        self.jobs: dict[str, Job] = {}
        self.records: deque[Record] = deque(maxlen=record_limit)
        self.in_flight = InFlight()

    def reset(self) -> None:
        """Forget jobs, recorded requests and overlap counters; issued tokens stay valid."""
        self.jobs.clear()
        self.records.clear()
        self.in_flight = InFlight()

    # -- tokens ------------------------------------------------------------------------------
    def issue_token(self, scopes: frozenset[str], lifetime_s: int) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = Token(scopes, time.monotonic() + lifetime_s)
        return token

    def token(self, value: str) -> Token | None:
        """The token if it is known and unexpired (expired ones are dropped on sight)."""
        token = self.tokens.get(value)
        if token is not None and token.expires_at <= time.monotonic():
            del self.tokens[value]
            return None
        return token

    def revoke_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    # -- jobs --------------------------------------------------------------------------------
    def store(self, client_job_id: str, document: dict[str, Any], body: bytes) -> Outcome:
        """Create or replace the job with an already validated document."""
        job = self.jobs.get(client_job_id)
        if job is None:
            job = Job(
                client_job_id, str(uuid.uuid4()), document, b"", deque(maxlen=self.history_limit)
            )
            self.jobs[client_job_id] = job
            outcome: Outcome = "created"
        else:
            job.document = document
            outcome = "aborted" if document["metadata"].get("status") == "Aborted" else "updated"
        job.response = _with_job_id(body, job.job_id)
        job.history.append(body)
        return outcome

    def record(self, record: Record) -> None:
        if self.records.maxlen != 0:
            self.records.append(record)


def _with_job_id(body: bytes, job_id: str) -> bytes:
    """The stored job as JSON: the client's own bytes with ``"jobId"`` spliced in first.

    Splicing avoids re-serialising a ~10 kB document on every request; it is safe because the
    body has been validated as a non-empty JSON object (it has ``metadata``), and ``jobId`` is
    not one of the keys a body may carry.
    """
    start = body.index(b"{") + 1
    return b'{"jobId":"' + job_id.encode() + b'",' + body[start:]
