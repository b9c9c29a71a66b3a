"""Circuit breaker: pauses everything while WorkfloPlus fails for every job, probes, resumes.

A pure state machine with time passed in (seconds from a monotonic clock); no asyncio. It does
not decide *whether* a failure is everyone's: :mod:`consumer.sync.diagnosis` judges each failure
by evidence across jobs, and the scheduler opens the circuit on a *systemic* verdict. The
scheduler acts on its state:

``closed``
    Normal operation; per-job retry budgets count. Opens on a failure judged systemic
    (``record_failure(now, systemic=True)``); a failure that is not changes nothing here.
``open``
    The scheduler pauses all partitions, sends nothing and spends no retry budget. When
    :meth:`CircuitBreaker.probe_due` says so it calls :meth:`CircuitBreaker.begin_probe` and tests
    the gateway (``GatewayClient.probe()``).
``half_open``
    One probe is in flight. Its success closes the circuit; its failure re-opens it and the next
    probe waits twice as long (``probe_initial`` doubling up to ``probe_max``).

Any success closes the circuit, whatever the state: a late in-flight request that got through
proves the gateway is back. A circuit that re-opens soon after closing (within ``probe_max``)
keeps its grown probe interval, so a gateway that answers probes but refuses real requests
(e.g. the scope for basicSync was removed) is not hammered once a second.

Protocol for the scheduler::

    if circuit.probe_due(now):
        circuit.begin_probe(now)
        if probe_result(await client.probe()) is not ProbeResult.DOWN:
            circuit.record_success(clock())
        else:
            circuit.record_failure(clock(), systemic=False)
"""

from __future__ import annotations

from enum import StrEnum

from consumer.errors import ConfigError


class CircuitState(StrEnum):
    """Where the breaker stands; values are stable names for metrics and logs."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Outage detection across all jobs. See the module docstring for the transitions."""

    def __init__(self, *, probe_initial: float = 1.0, probe_max: float = 30.0) -> None:
        if not 0 < probe_initial <= probe_max:
            raise ConfigError("circuit: need 0 < probe_initial <= probe_max")
        self.probe_initial = probe_initial
        self.probe_max = probe_max
        self._state = CircuitState.CLOSED
        self._opened_at: float | None = None
        self._closed_at: float | None = None
        self._interval = probe_initial
        self._next_probe_at: float | None = None

    @property
    def state(self) -> CircuitState:
        """Current state."""
        return self._state

    @property
    def opened_at(self) -> float | None:
        """When the current outage began (first opening); ``None`` while closed."""
        return self._opened_at

    @property
    def next_probe_at(self) -> float | None:
        """When the next probe is due; ``None`` unless open."""
        return self._next_probe_at if self._state is CircuitState.OPEN else None

    @property
    def is_closed(self) -> bool:
        """True when requests may flow and per-job retry budgets count."""
        return self._state is CircuitState.CLOSED

    def record_success(self, now: float) -> None:
        """A request or probe succeeded: close the circuit."""
        if self._state is not CircuitState.CLOSED:
            self._state = CircuitState.CLOSED
            self._opened_at = None
            self._next_probe_at = None
            self._closed_at = now

    def record_failure(self, now: float, systemic: bool) -> None:
        """A failure judged systemic (opens a closed circuit), or a failed probe (re-opens).

        A failure that is not systemic leaves a closed circuit closed: one job's trouble is
        that job's business (its retry budget), never a reason to pause the others.
        """
        if self._state is CircuitState.HALF_OPEN:
            self._interval = min(self._interval * 2, self.probe_max)
            self._reopen(now)
        elif self._state is CircuitState.CLOSED and systemic:
            self._open(now)
        # OPEN: late answers of requests sent before opening change nothing.

    def probe_due(self, now: float) -> bool:
        """True when open and the probe backoff has elapsed."""
        return (
            self._state is CircuitState.OPEN
            and self._next_probe_at is not None
            and now >= self._next_probe_at
        )

    def begin_probe(self, now: float) -> None:
        """The scheduler starts a probe: open -> half_open (only one probe at a time)."""
        if self._state is CircuitState.OPEN:
            self._state = CircuitState.HALF_OPEN

    def _open(self, now: float) -> None:
        flapping = self._closed_at is not None and now - self._closed_at < self.probe_max
        self._interval = min(self._interval * 2, self.probe_max) if flapping else self.probe_initial
        self._opened_at = now
        self._reopen(now)

    def _reopen(self, now: float) -> None:
        self._state = CircuitState.OPEN
        self._next_probe_at = now + self._interval
