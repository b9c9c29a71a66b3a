"""What the sandbox remembers: tokens, jobs with their accepted versions, recorded requests and
overlapping in-flight requests. One instance per process (so per worker with ``--workers``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["created", "updated", "aborted"]


@dataclass(slots=True)
class IssuedToken:
    scopes: frozenset[str]
    issued_at: float  # epoch seconds
    expires_at: float  # epoch seconds


@dataclass(slots=True)
class StoredJob:
    """A stored job. ``response`` is the JSON of the stored document plus ``jobId``."""

    client_job_id: str
    job_id: str
    status: str | None
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
    #: the W3C ``traceparent`` header the request carried, if any (no other header is kept:
    #: ``Authorization`` holds a token)
    traceparent: str | None = None


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

    def __init__(
        self, *, signing_key: str, record_limit: int = 10_000, history_limit: int = 1_000
    ) -> None:
        self.history_limit = history_limit
        self._key = signing_key.encode()
        self.tokens: dict[str, IssuedToken] = {}  # verified tokens, so each is checked once
        self.revoked_before = 0.0
        self.jobs: dict[str, StoredJob] = {}
        self.records: deque[Record] = deque(maxlen=record_limit)
        self.in_flight = InFlight()

    def reset(self) -> None:
        """Forget jobs, recorded requests and overlap counters; issued tokens stay valid."""
        self.jobs.clear()
        self.records.clear()
        self.in_flight = InFlight()

    # -- tokens ------------------------------------------------------------------------------
    # Tokens are HS256 JWTs signed with the settings' key, so every worker process of one
    # sandbox accepts the tokens any of them issued.
    def issue_token(self, scopes: frozenset[str], lifetime_s: int) -> str:
        now = time.time()
        claims = {
            "iat": now,
            "exp": now + lifetime_s,
            "scope": " ".join(sorted(scopes)),
            "jti": secrets.token_hex(8),
        }
        signed = _JWT_HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
        token = (signed + b"." + _b64(self._sign(signed))).decode()
        self.tokens[token] = IssuedToken(scopes, now, now + lifetime_s)
        return token

    def token(self, value: str) -> IssuedToken | None:
        """The token if it is genuine, unexpired and not revoked."""
        token = self.tokens.get(value)
        if token is None:
            token = self._verify(value)
            if token is None:
                return None
            self.tokens[value] = token
        now = time.time()
        if token.expires_at <= now or token.issued_at < self.revoked_before:
            del self.tokens[value]
            return None
        return token

    def revoke_tokens(self) -> int:
        """Invalidate every token issued until now; returns how many this process had seen."""
        count = len(self.tokens)
        self.tokens.clear()
        self.revoked_before = time.time()
        return count

    def _sign(self, signed: bytes) -> bytes:
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def _verify(self, value: str) -> IssuedToken | None:
        signed, _, signature = value.encode().rpartition(b".")
        try:
            if not hmac.compare_digest(
                base64.urlsafe_b64decode(_pad(signature)), self._sign(signed)
            ):
                return None
            claims = json.loads(base64.urlsafe_b64decode(_pad(signed.split(b".")[1])))
            return IssuedToken(frozenset(claims["scope"].split()), claims["iat"], claims["exp"])
        except (ValueError, IndexError, KeyError, AttributeError):
            return None

    # -- jobs --------------------------------------------------------------------------------
    def store(self, client_job_id: str, status: str | None, body: bytes) -> Outcome:
        """Create or replace the job with an already validated body."""
        job = self.jobs.get(client_job_id)
        if job is None:
            job = StoredJob(
                client_job_id, str(uuid.uuid4()), status, b"", deque(maxlen=self.history_limit)
            )
            self.jobs[client_job_id] = job
            outcome: Outcome = "created"
        else:
            job.status = status
            outcome = "aborted" if status == "Aborted" else "updated"
        job.response = _with_job_id(body, job.job_id)
        job.history.append(body)
        return outcome

    def document(self, client_job_id: str) -> dict[str, Any] | None:
        """The document WorkfloPlus holds for a job: its last accepted body (None if unknown)."""
        job = self.jobs.get(client_job_id)
        if job is None or not job.history:
            return None
        document: dict[str, Any] = json.loads(job.history[-1])
        return document

    def record(self, record: Record) -> None:
        if self.records.maxlen != 0:
            self.records.append(record)


_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _pad(data: bytes) -> bytes:
    return data + b"=" * (-len(data) % 4)


def _with_job_id(body: bytes, job_id: str) -> bytes:
    """The stored job as JSON: the client's own bytes with ``"jobId"`` spliced in first.

    Splicing avoids re-serialising a ~10 kB document on every request; it is safe because the
    body has been validated as a non-empty JSON object (it has ``metadata``), and ``jobId`` is
    not one of the keys a body may carry.
    """
    start = body.index(b"{") + 1
    return b'{"jobId":"' + job_id.encode() + b'",' + body[start:]
