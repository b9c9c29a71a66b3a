"""Systemic or per-job: who is to blame for a failed sync, decided by evidence across jobs.

A pure record of recent gateway outcomes with time passed in (seconds from a monotonic clock),
beside :mod:`consumer.sync.circuit` and :mod:`consumer.sync.retry`. The scheduler reports every
outcome to :class:`GatewayEvidence` and asks it about each failure of a job. The verdict says
what to do:

- **systemic**: WorkfloPlus fails for everyone. Open the circuit (pause every partition, probe,
  resume when it heals). The job spends no retry budget, is never failed and nothing is settled,
  however long the outage and however low the traffic.
- **per-job**: WorkfloPlus works, just not for this job. The job spends its own retry budget
  (:class:`~consumer.sync.retry.RetryPolicy`) and is then failed with a failure record; nobody
  else is paused.
- **undecided**: no evidence either way yet (typically a job alone). The job spends no budget
  and retries after its backoff; nobody is paused, so other jobs keep flowing and bring the
  evidence; the scheduler probes the gateway (at most once per probe interval) and reports it
  with :meth:`GatewayEvidence.probed`.

The rule, first matching row wins. *Meanwhile* is the time since the job's previous failure, at
most ``window`` seconds back (for its first failure: the last ``window`` seconds); *the window*
is the last ``window`` seconds:

====  ==========================================================  ==========
row   evidence                                                    verdict
====  ==========================================================  ==========
1     the failure is the token endpoint's (down, or rejecting     systemic
      our credentials): every job needs that token
2     the token endpoint failed meanwhile and nothing succeeded   systemic
      after that
3     another job succeeded meanwhile (2xx, or a final 4xx: the   per-job
      gateway processed it): a 403 or 5xx only some jobs get
4     no other job failed meanwhile and the latest probe          per-job
      meanwhile found the gateway up with our token authorized
      (for 5xx, 408, 429, timeouts: also a probe answered 403)
5     nothing succeeded in the window, and other jobs failed in   systemic
      it or the latest probe found the gateway down: a 403 or
      5xx that all get
6     anything else                                               undecided
====  ==========================================================  ==========

A per-job verdict (rows 3 and 4) stands only when the job's failures in a row are unlikely to
be chance: with *r* the share of *fresh* requests that failed in the window (a job's request
with no failure in a row before it: a healthy job's, or a bad job's first; this job's own left
out) and *n* the job's failures in a row (this one included), r^n must be at most
:data:`CHANCE` (one in a thousand). Otherwise the verdict is *undecided*. A gateway that fails a
share of everyone's requests (a load balancer with one node of three broken: r = 1/3) would
otherwise fail every job that drew its budget's worth of per-job failures in a row (eight: up
to one job in 6,600), for nothing wrong with any. Now a job is charged only from its seventh
failure in a row at r = 1/3, its third at r = 5 %, its first while fresh requests fail less
than one time in a thousand. Counting fresh requests only keeps bad jobs from looking like a
flaky gateway: twenty jobs refused forever among healthy traffic raise r by their first
failures only, not by their retries.

So a single job during an outage is never failed: with one dirty job and no success there is
nothing to tell "this job" from "the gateway" (row 6), and once a probe finds the gateway down
it is systemic (row 5). Measuring *meanwhile* from the job's previous failure is why an outage
charges a job at most about one attempt: the successes just before the outage count for its
first failure there, never for the next. Nobody is paused on a hunch (row 6): pausing would
stop the very traffic whose successes show that the gateway works, and a job that fails alone
would then stall everyone. A probe answered 403 cannot tell a refused job from a revoked scope,
so it never makes a 401 or 403 per-job; such a lone job waits until another job succeeds.
Nor can any probe tell a basicSync answered 404 or 405 (a base URL with no basicSync behind
it) from a job of its own: the probe's 404 is what a wrong URL answers too, so only another
job's success makes such a failure per-job. The same holds for a 2xx web page (a firewall's
block page, a login portal): whatever stands in front answers the probe as it pleases.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from consumer.errors import ConfigError
from consumer.gateway.client import NO_BASICSYNC, Retryable, Systemic

_TOKEN_REASONS = ("token_unavailable", "token_rejected")

#: how unlikely a job's failures in a row must be, at the others' failure rate, to be its own
CHANCE = 1e-3


class Verdict(StrEnum):
    """Who a failure is blamed on; values are stable names for metrics and logs."""

    SYSTEMIC = "systemic"
    PER_JOB = "per_job"
    UNDECIDED = "undecided"


class FailureKind(StrEnum):
    """A failed sync, by what it says about the gateway."""

    #: 5xx, 408, 429, timeout, connection error: the gateway may be down.
    UNAVAILABLE = "unavailable"
    #: 401 after a fresh token, 403, 3xx: the gateway answers but refuses.
    REFUSED = "refused"
    #: basicSync answered 404 or 405, or a 2xx web page came back: perhaps no basicSync at
    #: this URL (or a firewall or portal in front of it), for every job.
    NOT_BASICSYNC = "not_basicsync"
    #: The token endpoint is down or rejects our credentials.
    TOKEN = "token"


class ProbeResult(StrEnum):
    """What a probe of the gateway found."""

    DOWN = "down"
    #: The gateway answered a call with our token (2xx, 404).
    UP = "up"
    #: The gateway answered 403: up, but it cannot tell a refused job from a revoked scope.
    UP_FORBIDDEN = "up_forbidden"


def kind_of(outcome: Retryable | Systemic) -> FailureKind:
    """The kind of a failed :meth:`GatewayClient.post_basic_sync` outcome."""
    if outcome.reason.startswith(_TOKEN_REASONS):
        return FailureKind.TOKEN
    if isinstance(outcome, Retryable):
        return FailureKind.UNAVAILABLE
    if outcome.reason.startswith(NO_BASICSYNC):
        return FailureKind.NOT_BASICSYNC
    return FailureKind.REFUSED


def probe_result(status: int | None) -> ProbeResult:
    """A probe's HTTP status (None: no answer, or no token) as evidence."""
    if status is None or status in (401, 408, 429) or status >= 500:
        return ProbeResult.DOWN
    return ProbeResult.UP_FORBIDDEN if status == 403 else ProbeResult.UP


@dataclass(slots=True)
class _Fresh:
    """A fresh request's outcome in the window: counted until it leaves the window, or until
    its job is forgotten (a first failure)."""

    at: float
    failed: bool
    counted: bool = True


@dataclass(slots=True)
class _LatestTwo:
    """The latest outcome's (time, job), and the latest of a job other than that one.

    Enough to tell whether any job other than a given one had an outcome since a time, in
    constant time: times only grow (a monotonic clock).
    """

    first: tuple[float, str] | None = None
    second: tuple[float, str] | None = None

    def add(self, at: float, job: str) -> None:
        if self.first is not None and self.first[1] != job:
            self.second = self.first
        self.first = (at, job)

    def other_than(self, job: str, since: float) -> bool:
        """Whether a job other than ``job`` had one at ``since`` or later."""
        latest = self.first if self.first is not None and self.first[1] != job else self.second
        return latest is not None and latest[0] >= since


class GatewayEvidence:
    """Recent outcomes across jobs and the rule above.

    What the rule asks of the last ``window`` seconds is kept as a few latest times (the
    latest success of each of two jobs, the latest outcome of each of two jobs, the latest
    token failure, success and probe), so judging a failure costs the same at any rate.
    Scanning every outcome of the window, as it first did, cost 1.8 ms per failure at 500
    requests per second half of them failing (a load balancer with a node down): 45 % of a
    core spent blaming, and more than a core at 900.
    """

    def __init__(self, *, window: float = 60.0) -> None:
        if window <= 0:
            raise ConfigError("diagnosis: window must be > 0")
        self.window = window
        #: jobs' successes (2xx, or a final 4xx)
        self._succeeded = _LatestTwo()
        #: jobs' outcomes, successes and failures
        self._outcomes = _LatestTwo()
        #: the latest success of any kind (a job's, or a probe that found the gateway up)
        self._last_ok: float | None = None
        self._last_token_failure: float | None = None
        self._last_probe: tuple[float, ProbeResult] | None = None
        #: job -> when its latest failure was recorded (cleared by its success).
        self._last_failure: dict[str, float] = {}
        #: the fresh requests of the window, oldest first, and how many count and failed
        self._fresh: deque[_Fresh] = deque()
        self._fresh_counted = 0
        self._fresh_failed = 0
        #: job -> its failures in a row (cleared by its success)
        self._in_a_row: dict[str, int] = {}
        #: job -> the fresh failure that began them (left out of its own judgement)
        self._first_failure: dict[str, _Fresh] = {}

    def succeeded(self, job: str, now: float) -> None:
        """A request of ``job`` was processed: 2xx, or a final 4xx (the gateway is up)."""
        self._succeeded.add(now, job)
        self._outcomes.add(now, job)
        self._last_ok = now
        self._last_failure.pop(job, None)
        if job not in self._in_a_row:
            self._count_fresh(_Fresh(now, failed=False))
        self._in_a_row.pop(job, None)
        self._first_failure.pop(job, None)

    def probed(self, result: ProbeResult, now: float) -> None:
        """A probe finished."""
        self._last_probe = (now, result)
        if result is not ProbeResult.DOWN:
            self._last_ok = now

    def forget_job(self, job: str) -> None:
        """The job left this member (revoked, failed, settled): drop what is kept for it."""
        self._last_failure.pop(job, None)
        self._in_a_row.pop(job, None)
        first = self._first_failure.pop(job, None)
        if first is not None:
            self._uncount(first)

    def failed(self, job: str, kind: FailureKind, now: float) -> Verdict:
        """Record a failed request of ``job`` and judge it (see the table)."""
        since = max(self._last_failure.get(job, now - self.window), now - self.window)
        in_a_row = self._in_a_row.get(job, 0) + 1
        verdict = self._judge(job, kind, since, now)
        if verdict is Verdict.PER_JOB and self._maybe_chance(job, in_a_row, now):
            verdict = Verdict.UNDECIDED
        self._outcomes.add(now, job)
        if kind is FailureKind.TOKEN:
            self._last_token_failure = now
        self._last_failure[job] = now
        if in_a_row == 1:
            first = _Fresh(now, failed=True)
            self._count_fresh(first)
            self._first_failure[job] = first
        self._in_a_row[job] = in_a_row
        return verdict

    def _maybe_chance(self, job: str, in_a_row: int, now: float) -> bool:
        """Whether ``in_a_row`` failures of ``job`` could be chance at the failure rate of
        the other fresh requests of the window (see the module)."""
        self._expire(now - self.window)
        first = self._first_failure.get(job)
        own = 1 if first is not None and first.counted else 0
        others = self._fresh_counted - own
        if others <= 0:
            return False
        rate = (self._fresh_failed - own) / others
        return bool(rate**in_a_row > CHANCE)

    def _count_fresh(self, fresh: _Fresh) -> None:
        """Count a fresh request; what left the window is dropped as it goes (60 s at 1,000
        fresh requests per second is 60,000 small objects)."""
        self._expire(fresh.at - self.window)
        self._fresh.append(fresh)
        self._fresh_counted += 1
        self._fresh_failed += fresh.failed

    def _expire(self, start: float) -> None:
        fresh = self._fresh
        while fresh and fresh[0].at < start:
            self._uncount(fresh.popleft())

    def _uncount(self, fresh: _Fresh) -> None:
        if fresh.counted:
            fresh.counted = False
            self._fresh_counted -= 1
            self._fresh_failed -= fresh.failed

    def _judge(self, job: str, kind: FailureKind, since: float, now: float) -> Verdict:
        if kind is FailureKind.TOKEN:
            return Verdict.SYSTEMIC  # row 1
        if self._token_failing(since):
            return Verdict.SYSTEMIC  # row 2
        if self._succeeded.other_than(job, since):
            return Verdict.PER_JOB  # row 3
        convincing = {ProbeResult.UP} if kind is not FailureKind.NOT_BASICSYNC else set()
        if kind is FailureKind.UNAVAILABLE:
            convincing.add(ProbeResult.UP_FORBIDDEN)
        probe = self._last_probe
        if (
            not self._outcomes.other_than(job, since)
            and probe is not None
            and probe[0] >= since
            and probe[1] in convincing
        ):
            return Verdict.PER_JOB  # row 4
        start = now - self.window
        succeeded = self._succeeded.first
        if (succeeded is None or succeeded[0] < start) and (
            self._outcomes.other_than(job, start)
            or (probe is not None and probe[0] >= start and probe[1] is ProbeResult.DOWN)
        ):
            return Verdict.SYSTEMIC  # row 5
        return Verdict.UNDECIDED  # row 6

    def _token_failing(self, since: float) -> bool:
        """The token endpoint failed since ``since``, and nothing succeeded after that."""
        failed_at = self._last_token_failure
        if failed_at is None or failed_at < since:
            return False
        return self._last_ok is None or self._last_ok <= failed_at
