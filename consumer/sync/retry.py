"""Retry policy: how long to wait before the next attempt, and when to give up.

A declarative, pure policy (no sleeping, no I/O, randomness passed in). The scheduler owns the
waiting: a job due for retry is a timer entry, not a coroutine blocked in ``sleep``, because the
circuit breaker may pause everything and suspend the budget in the meantime. That is also why
this is not stamina or tenacity: both wrap a call and sleep inside it, which is the one thing the
scheduler must not hand over. What remains is about forty lines, not worth a dependency.

Backoff is exponential with *full jitter* (AWS architecture blog, "Exponential Backoff And
Jitter"): the delay before attempt ``n + 1`` is ``uniform(0, min(maximum, initial * multiplier **
(n - 1)))``. A ``Retry-After`` from the server is a floor: we never come back sooner than asked,
up to ``retry_after_max``. Past it the job would neither sync nor fail for as long as a
gateway asked (a day, or milliseconds sent as seconds: years); capped, it comes back and, if
refused again, spends its budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from consumer.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Backoff bounds and the per-job retry budget (counted only while the circuit is closed)."""

    initial: float
    """Upper bound of the first delay, seconds."""
    maximum: float
    """Upper bound of any computed delay, seconds (``Retry-After`` may exceed it)."""
    max_attempts: int
    """Attempts (the first one included) after which a job's sync is a final failure."""
    max_elapsed: float
    """Seconds since the first attempt after which a job's sync is a final failure."""
    multiplier: float = 2.0
    retry_after_max: float = 3600.0
    """The longest a ``Retry-After`` is honoured, seconds."""

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError("retry: need 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ConfigError("retry: multiplier must be >= 1")
        if self.max_attempts < 1 or self.max_elapsed <= 0:
            raise ConfigError("retry: max_attempts must be >= 1 and max_elapsed > 0")
        if self.retry_after_max <= 0:
            raise ConfigError("retry: retry_after_max must be > 0")

    def cap(self, attempt: int) -> float:
        """Upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        try:
            grown = self.initial * self.multiplier ** max(attempt - 1, 0)
        except OverflowError:  # huge attempt numbers: the cap has long been reached
            return self.maximum
        return min(self.maximum, grown)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Full jitter in ``[0, cap(attempt)]``; at least ``retry_after`` (up to
        ``retry_after_max``) when the server sent one.
        """
        jittered = rng.uniform(0.0, self.cap(attempt))
        if retry_after is not None and retry_after > jittered:
            return max(min(retry_after, self.retry_after_max), jittered)
        return jittered

    def exhausted(self, attempts: int, elapsed: float) -> bool:
        """True when a job has used its budget: ``attempts`` made or ``elapsed`` seconds spent."""
        return attempts >= self.max_attempts or elapsed >= self.max_elapsed
