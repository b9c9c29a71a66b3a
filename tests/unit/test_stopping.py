"""Waits that give way to a stop (consumer.stopping)."""

from __future__ import annotations

import asyncio

import pytest

from consumer.stopping import Stopped, holding_unless_stopped, set_within, unless_stopped


async def test_work_that_ends_first_gives_its_result() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert await unless_stopped(asyncio.Event(), work()) == 7


async def test_work_that_fails_first_raises_its_error() -> None:
    async def work() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await unless_stopped(asyncio.Event(), work())


async def test_a_stop_first_cancels_the_work_and_raises_stopped() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, stop.set)
    with pytest.raises(Stopped):
        await asyncio.wait_for(unless_stopped(stop, work()), 5)
    assert cancelled.is_set()


async def test_the_lock_is_held_for_the_block_and_released_after() -> None:
    lock = asyncio.Lock()
    async with holding_unless_stopped(lock, asyncio.Event()) as held:
        assert held
        assert lock.locked()
    assert not lock.locked()


async def test_a_stop_while_waiting_for_the_lock_enters_without_it() -> None:
    """The holder keeps the lock; the waiter enters the block without it, and takes nothing
    from the holder when it leaves."""
    lock = asyncio.Lock()
    stop = asyncio.Event()
    await lock.acquire()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    async with holding_unless_stopped(lock, stop) as held:
        assert not held
    assert lock.locked()
    lock.release()
    async with holding_unless_stopped(lock, asyncio.Event()) as held:
        assert held  # no waiter left behind to take it


async def test_work_given_more_time_after_the_stop_ends_in_it_or_is_cancelled() -> None:
    """With ``then_s``, work still running at the stop gets that long to end."""
    stop = asyncio.Event()
    stop.set()

    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_stopped(stop, quick(), then_s=lambda: 5.0) == "done"
    with pytest.raises(Stopped):
        await asyncio.wait_for(unless_stopped(stop, asyncio.Event().wait(), then_s=lambda: 0.01), 5)


async def test_set_within_says_whether_the_event_came_in_time() -> None:
    event = asyncio.Event()
    assert not await set_within(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await set_within(event, 5)
    assert await set_within(event, None)


async def test_a_cancel_in_the_turn_the_event_is_set_is_not_swallowed() -> None:
    """``asyncio.wait_for`` on Python 3.11 returned True here instead of raising: the waiter
    of a loop around it waited again and never ended."""
    event = asyncio.Event()
    waiter = asyncio.create_task(set_within(event, 60))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
