"""Waits that give way to a stop.

A member waits on Kafka for as long as aiokafka lets it, and some of its waits hold the consume
loop's lock (a partition's take: fencing, restoring). A broker that stops answering then held a
SIGTERM for aiokafka's request timeout at start (47 s measured), and for as long as a restore
hung once running (past 60 s measured). These helpers stop waiting once ``stop`` is set; what
they gave up on is the caller's to account for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """``stop`` was set while :func:`unless_stopped` waited."""


async def unless_stopped(
    stop: asyncio.Event, work: Awaitable[T], *, then_s: Callable[[], float] | None = None
) -> T:
    """``work``; once ``stop`` is set first, cancelled (raising :class:`Stopped`) at once, or
    after ``then_s()`` more seconds if it has not ended by then."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and then_s is not None:
            await asyncio.wait((task,), timeout=then_s())
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
        if not task.cancelled():
            task.exception()  # read, even when this task is cancelled: asyncio logs it
    if task.cancelled():
        raise Stopped
    return task.result()


async def set_within(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Whether ``event`` was set within ``timeout_s`` seconds (None: no limit).

    Not ``asyncio.wait_for`` (banned in this package): on Python 3.11 it returns the result of
    an awaitable that ends in the same turn as its caller is cancelled, swallowing the cancel.
    The scheduler's loop around such a wait then waited again instead of ending, and a member
    whose task group was stopping on a fatal error never exited (3 times in about 60 runs of
    the test of two groups on one changelog, under load).
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


@asynccontextmanager
async def holding_unless_stopped(lock: asyncio.Lock, stop: asyncio.Event) -> AsyncIterator[bool]:
    """Hold ``lock`` for the block (True), or enter it without (False) once ``stop`` is set
    while waiting for it."""
    try:
        await unless_stopped(stop, lock.acquire())
    except Stopped:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
