"""``start_client``'s own rules, over plain coroutines (the broker side is in
tests/integration/test_client_start.py)."""

from __future__ import annotations

import asyncio

import pytest

from consumer.kafka.starting import start_client


async def test_a_failed_start_raises_its_own_error() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError("no")

    with pytest.raises(ConnectionRefusedError):
        await start_client(refused())


async def test_a_cancelled_start_finishes_within_the_grace_then_the_cancel_is_heard() -> None:
    finished = asyncio.Event()

    async def slow() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    task = asyncio.ensure_future(start_client(slow(), grace_s=5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_a_second_cancel_during_the_grace_cancels_the_start_before_it_returns() -> None:
    outcome: list[str] = []

    async def hung() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    task = asyncio.ensure_future(start_client(hung(), grace_s=60))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # in its grace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]  # unwound before the caller goes on to stop the client


async def test_a_start_that_fails_during_the_grace_does_not_replace_the_cancellation() -> None:
    async def failing_late() -> None:
        await asyncio.sleep(0.02)
        raise OSError("reset")

    task = asyncio.ensure_future(start_client(failing_late(), grace_s=5))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
