"""How many due jobs may be between their intent and their request at once.

A job's request leaves only after its intent is durable, and the intents of a partition that
wait together share one Kafka transaction: its round trips cost about the same for one intent
or for fifty. Bounding the jobs in that stage by ``concurrency`` (as many as requests in flight)
caps the intents per transaction, and with it the request rate, at ``concurrency`` / (the time
a transaction takes) however fast WorkfloPlus answers: on a 2-core machine, 32 jobs over 40 to
50 ms transactions held live traffic to about 600 requests a second with a p99 of 1.5 s.

The bound is still what keeps committed intents from queueing in front of busy request slots,
where they would go stale (a request must start within ``send_within`` of its intent) and stop
coalescing the job's later changes. So it adapts, additive increase and multiplicative decrease:
each request that got its slot (and the rate limit's leave) without waiting longer than its
intent took to commit lets one more job in, up to ``ceiling``; each that waited longer halves
the bound, down to ``floor`` (``concurrency``, the bound that never lets an intent wait longer
than one request). When WorkfloPlus is the bottleneck the stage is as small as it always was;
when the transactions are, it grows. (A transaction releases its intents together, so a slot
may be busy for a moment although WorkfloPlus keeps up: a wait shorter than the commit is that.)
It grows for live traffic only (the scheduler resets it when a catch-up starts and holds it
while the caught-up jobs drain): a backlog drained faster posts twice the jobs whose last events
are still on their way.
"""

from __future__ import annotations

import asyncio

#: The stage grows to at most this many times ``concurrency`` (512 jobs by default): at 1,058
#: live events/s on a 2-core machine, 4x gave a p99 of 659 ms and 16x 461 ms, where 1x gave
#: 1,524 ms; the intents it admits share a partition's transaction, a few MB at most.
INTENT_STAGE_CEILING_FACTOR = 16
#: A wait for a slot this short counts as none, whatever the commit took (clock granularity).
SLOT_WAIT_NOISE_S = 0.01


class IntentAdmission:
    """A counting gate whose limit moves between ``floor`` and ``ceiling``.

    One task admits (the scheduler's dispatch loop); any task releases.
    """

    def __init__(self, floor: int, ceiling: int) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got {floor} and {ceiling}")
        self.floor = floor
        self.ceiling = ceiling
        self.limit = floor
        self.held = 0
        self._room = asyncio.Event()
        self._room.set()

    async def acquire(self) -> None:
        """Wait until fewer than ``limit`` jobs are admitted, then admit one."""
        while self.held >= self.limit:
            self._room.clear()
            await self._room.wait()
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._signal()

    def sent_at_once(self) -> None:
        """A request got its slot at once: the stage is not queueing in front of WorkfloPlus."""
        if self.limit < self.ceiling:
            self.limit += 1
            self._signal()

    def slot_busy(self) -> None:
        """A request waited for its slot: intents queue in front of WorkfloPlus, admit fewer."""
        self.limit = max(self.floor, self.limit // 2)

    def reset(self) -> None:
        """Back to ``floor``: what was learnt of live traffic does not hold for a backlog."""
        self.limit = self.floor

    def _signal(self) -> None:
        if self.held < self.limit:
            self._room.set()
