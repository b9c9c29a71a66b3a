"""Fault injection: what the sandbox does wrong on purpose, changeable while it runs.

``FaultConfig`` is the wire and Python shape (the same model travels over
``/_sandbox/faults``); ``Faults`` is the live state a running sandbox consults on each
request, with its own random generator (seedable) and the "next N requests" counter.

Latency, error rates, per-job errors, 429s, rejections and web pages apply to
``POST /jobs/v1/basicSync`` only, ``token_delay_ms`` to the token endpoint only; an outage
applies to every WorkfloPlus endpoint (token, basicSync, get job) but never to ``/_sandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OutageMode = Literal["503", "refuse"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FixedLatency(_Frozen):
    kind: Literal["fixed"] = "fixed"
    ms: float = Field(ge=0)


class UniformLatency(_Frozen):
    kind: Literal["uniform"] = "uniform"
    min_ms: float = Field(ge=0)
    max_ms: float = Field(ge=0)


class ExponentialLatency(_Frozen):
    """Exponentially distributed delay with mean ``mean_ms``, capped at ``max_ms``."""

    kind: Literal["exponential"] = "exponential"
    mean_ms: float = Field(gt=0)
    max_ms: float = Field(default=60_000, ge=0)


Latency = Annotated[FixedLatency | UniformLatency | ExponentialLatency, Field(discriminator="kind")]


class InjectedRejection(_Frozen):
    """A chosen 4xx answer for one clientJobId, with the JSON body to send."""

    status: int = Field(default=400, ge=400, le=499)
    body: Any = None
    echo_authorization: bool = Field(
        default=False,
        description="the body (an object) also carries the request's Authorization header, "
        "as a gateway in debugging mode echoes it",
    )


class FaultConfig(_Frozen):
    """Every runtime fault; the defaults mean "behave normally"."""

    latency: Latency | None = None
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: tuple[int, ...] = Field(default=(500,), min_length=1)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered 429")
    rate_limit_next: int = Field(default=0, ge=0, description="the next N requests get 429")
    rate_limit_job_ids: frozenset[str] = frozenset()
    retry_after_s: int = Field(default=1, ge=0)
    token_lifetime_s: int | None = Field(default=None, gt=0, description="for new tokens")
    client_secrets: tuple[str, ...] = Field(
        default=(),
        description="when set, the token endpoint accepts these client secrets instead of the "
        "configured one: a secret rotated at the identity provider (two while both are valid)",
    )
    token_delay_ms: float = Field(
        default=0,
        ge=0,
        description="the token endpoint answers after this long (or once this is lowered): a "
        "slow or hung identity provider",
    )
    reject_job_ids: dict[str, InjectedRejection] = Field(default_factory=dict)
    error_job_ids: dict[str, Annotated[int, Field(ge=500, le=599)]] = Field(
        default_factory=dict,
        description="these clientJobIds always get the given 5xx; other jobs are served",
    )
    web_page_job_ids: frozenset[str] = Field(
        default=frozenset(),
        description=(
            "these clientJobIds get 200 with an HTML block page, as a web application firewall "
            "in front of the gateway answers; the job is not stored"
        ),
    )
    web_page_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction of requests answered so (1: a portal)"
    )
    fail_first_per_job: int = Field(
        default=0,
        ge=0,
        description="every clientJobId's first N basicSync requests get one of "
        "error_statuses, and it is served from then on: failures that come to every job, "
        "a few times each (as from a flaky load balancer), not to some jobs always",
    )
    hold_first_ms: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "the first basicSync request of each listed clientJobId is held this long, then "
            "applied even if the client gave up meanwhile: a request that lands late"
        ),
    )
    seed: int | None = None


class Faults:
    """The live fault state of one sandbox process."""

    def __init__(self) -> None:
        self.config = FaultConfig()
        self._random = random.Random()
        self._rate_limit_left = 0
        self.outage_until = 0.0
        self.outage_mode: OutageMode = "503"
        self._configured = False
        self._held: set[str] = set()
        self._failed_first: dict[str, int] = {}
        self._changed = asyncio.Event()

    def set(self, config: FaultConfig) -> FaultConfig:
        """Replace every fault with ``config`` (restarting the "next N" counter)."""
        self.config = config
        self._rate_limit_left = config.rate_limit_next
        self._random = random.Random(config.seed)
        self._held = set()
        self._failed_first = {}
        self._configured = config.model_dump(exclude=_NOT_BASICSYNC) != _NORMAL
        self._changed.set()  # wakes what waits on the faults (set from the sandbox's loop)
        self._changed = asyncio.Event()
        return config

    async def token_delay(self) -> None:
        """Hold a token request for ``token_delay_ms``, or until the fault is lowered or
        cleared: a hung identity provider that recovers answers the requests it held."""
        held = time.monotonic()
        while (left := self.config.token_delay_ms / 1000 - (time.monotonic() - held)) > 0:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Change only the given fields (validated); the others keep their current values."""
        merged = {**self.config.model_dump(), **changes}
        return self.set(FaultConfig.model_validate(merged))

    def clear(self) -> None:
        """Back to normal behaviour, including ending any outage."""
        self.set(FaultConfig())
        self.outage_until = 0.0

    @property
    def active(self) -> bool:
        """Whether any basicSync fault could fire (lets the hot path skip the checks)."""
        return self._configured or self._rate_limit_left > 0

    def outage_left(self) -> float:
        """Seconds of outage remaining, 0 when the sandbox is up."""
        return max(0.0, self.outage_until - time.monotonic())

    def delay_s(self) -> float:
        latency = self.config.latency
        if latency is None:
            return 0.0
        if isinstance(latency, FixedLatency):
            ms = latency.ms
        elif isinstance(latency, UniformLatency):
            ms = self._random.uniform(latency.min_ms, latency.max_ms)
        else:
            ms = min(self._random.expovariate(1.0 / latency.mean_ms), latency.max_ms)
        return ms / 1000.0

    def rate_limited(self, client_job_id: str | None) -> bool:
        """Whether this request gets 429 (consumes one of the "next N" if set)."""
        config = self.config
        if self._rate_limit_left > 0:
            self._rate_limit_left -= 1
            return True
        if client_job_id is not None and client_job_id in config.rate_limit_job_ids:
            return True
        return config.rate_limit_rate > 0 and self._random.random() < config.rate_limit_rate

    def error_status(self) -> int | None:
        """A status from ``error_statuses`` for a fraction ``error_rate`` of requests."""
        config = self.config
        if config.error_rate > 0 and self._random.random() < config.error_rate:
            return self._random.choice(config.error_statuses)
        return None

    def hold_once(self, client_job_id: str | None) -> float:
        """Seconds to hold this request before applying it: only a listed job's first one."""
        if client_job_id is None or client_job_id in self._held:
            return 0.0
        hold_ms = self.config.hold_first_ms.get(client_job_id)
        if hold_ms is None:
            return 0.0
        self._held.add(client_job_id)
        return hold_ms / 1000.0

    def job_error(self, client_job_id: str | None) -> int | None:
        """The 5xx this job always gets, if it is listed in ``error_job_ids``, or one of
        ``error_statuses`` for each of its first ``fail_first_per_job`` requests."""
        if client_job_id is None:
            return None
        config = self.config
        failed = self._failed_first.get(client_job_id, 0)
        if failed < config.fail_first_per_job:
            self._failed_first[client_job_id] = failed + 1
            return config.error_statuses[failed % len(config.error_statuses)]
        return config.error_job_ids.get(client_job_id)

    def web_page(self, client_job_id: str | None) -> bool:
        """Whether this request gets a 200 HTML block page instead of basicSync's answer."""
        config = self.config
        if client_job_id is not None and client_job_id in config.web_page_job_ids:
            return True
        return config.web_page_rate > 0 and self._random.random() < config.web_page_rate

    def rejection(self, client_job_id: str | None) -> InjectedRejection | None:
        if client_job_id is None:
            return None
        return self.config.reject_job_ids.get(client_job_id)


#: Fields that change no basicSync answer (``Faults.active`` skips them).
_NOT_BASICSYNC = {"token_lifetime_s", "token_delay_ms", "seed"}
_NORMAL = FaultConfig().model_dump(exclude=_NOT_BASICSYNC)
