"""Kafka gone under a running member, said once with its cause.

aiokafka reconnects on its own and logs each failed attempt in its own words ("Unable connect
to node", "Connection at ... closed"): a broker down, a listener that now refuses our expired
client certificate, a SASL user deleted and a DNS name gone all look alike, and nothing of the
member's own says which. So every :data:`CHECK_S` seconds the member asks the cluster for the
changelog's metadata (one small request); once that has failed for ``unreachable_after_s``, it
asks why the way the start does (:mod:`consumer.kafka.diagnose`: each bootstrap server dialled,
then one handshake made as the clients make it), logs ``kafka_unreachable`` (error) with the
cause, and fails readiness's ``kafka`` check with it. The first answer after that logs
``kafka_reachable_again`` with how long Kafka was gone.

Nothing else changes: aiokafka goes on reconnecting, and nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import structlog
from aiokafka.errors import KafkaError

log = structlog.get_logger(__name__)

#: how often the cluster is asked, and how long one answer may take
CHECK_S = 5.0
ASK_TIMEOUT_S = 10.0


@dataclass
class Reachability:
    """Whether Kafka has answered lately, and whether its absence was reported. Pure: times
    are passed in (monotonic seconds)."""

    unreachable_after_s: float
    #: when the current run of failed asks began (None: the last ask was answered)
    failing_since: float | None = None
    reported: bool = False

    def failed(self, asked_at: float, now: float) -> bool:
        """An ask made at ``asked_at`` failed; True when it is time to report Kafka unreachable
        (once per outage). Kafka has not answered since the ask began: a broker that hangs
        fails the ask only at its timeout, which must not be added to the time it is given."""
        if self.failing_since is None:
            self.failing_since = asked_at
        if self.reported or now - self.failing_since < self.unreachable_after_s:
            return False
        self.reported = True
        return True

    def answered(self, now: float) -> float | None:
        """An ask was answered; how long Kafka was gone when that was reported, else None."""
        since, reported = self.failing_since, self.reported
        self.failing_since, self.reported = None, False
        return now - since if reported and since is not None else None


@dataclass(frozen=True)
class KafkaProbe:
    """What the watch needs: a cheap request, and the words for why Kafka does not answer."""

    ask: Callable[[], Awaitable[object]]
    cause: Callable[[BaseException], Awaitable[str]]
    #: told the cause when Kafka is reported unreachable, None once it answers again
    report: Callable[[str | None], None]


async def watch(
    probe: KafkaProbe,
    state: Reachability,
    interval_s: float = CHECK_S,
    ask_timeout_s: float = ASK_TIMEOUT_S,
) -> None:
    """Ask every ``interval_s`` seconds until cancelled, reporting as :class:`Reachability`
    decides."""
    while True:
        await asyncio.sleep(interval_s)
        asked_at = time.monotonic()
        try:
            async with asyncio.timeout(ask_timeout_s):
                await probe.ask()
        except (KafkaError, OSError, TimeoutError) as exc:
            if state.failed(asked_at, time.monotonic()):
                cause = await _cause(probe, exc)
                gone = time.monotonic() - (state.failing_since or time.monotonic())
                log.error("kafka_unreachable", cause=cause, unanswered_s=round(gone, 1))
                probe.report(cause)
            continue
        gone_s = state.answered(time.monotonic())
        if gone_s is not None:
            log.info("kafka_reachable_again", unreachable_s=round(gone_s, 1))
            probe.report(None)


@asynccontextmanager
async def watching_kafka(
    probe: KafkaProbe,
    unreachable_after_s: float,
    interval_s: float = CHECK_S,
    ask_timeout_s: float = ASK_TIMEOUT_S,
) -> AsyncIterator[Reachability]:
    """Run :func:`watch` for the ``with`` block."""
    state = Reachability(unreachable_after_s)
    task = asyncio.create_task(
        watch(probe, state, interval_s, ask_timeout_s), name="kafka-reachability"
    )
    try:
        yield state
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        if state.reported:  # what this run found no longer holds once it has ended
            probe.report(None)


async def _cause(probe: KafkaProbe, exc: BaseException) -> str:
    """Why Kafka does not answer; a diagnosis that fails itself must not end the watch."""
    try:
        return await probe.cause(exc)
    except Exception as failed:  # the words are a courtesy: the report goes out regardless
        return f"{type(exc).__name__}: {exc} (the diagnosis failed: {type(failed).__name__})"
