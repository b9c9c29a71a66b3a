"""The input-pattern watch's loop: it ends when its task is cancelled, in any turn."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from consumer.kafka.input_topics import InputSelection, InputTopics
from consumer.kafka.topic_watch import InputTopicWatch


class _Source:
    """A source whose rebalances the test makes."""

    topics: tuple[str, ...] = ("in.a",)

    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    def subscribe(self, topics: list[str]) -> None:
        self.topics = tuple(topics)

    async def assignment_changed(self) -> None:
        await self.assigned.wait()
        self.assigned.clear()


class _Watch(InputTopicWatch):
    """Looks at nothing: counts its looks."""

    looks = 0

    async def refresh(self) -> InputSelection | None:
        self.looks += 1
        return None


def _watch(source: _Source) -> _Watch:
    inputs = InputTopics(listed=(), pattern=re.compile(r"in\..*"))
    admin: Any = None
    return _Watch(admin, inputs, 2, source, lambda read, refused: None, interval_s=60)


@pytest.mark.parametrize("turns", range(8))
async def test_a_cancel_in_any_turn_after_a_rebalance_ends_the_watch(turns: int) -> None:
    """The task group cancels the watch when the consume loop fails. Cancelled while it
    cleared up its waits after a rebalance, the watch once swallowed the cancel (it awaited
    each cancelled wait under ``suppress(CancelledError)``) and looked again for ever, so
    the member never exited; ``turns`` moves the cancel through that clean-up."""
    source = _Source()
    watch = _watch(source)
    task = asyncio.create_task(watch.run(asyncio.Event()))
    await asyncio.sleep(0.01)
    source.assigned.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(1):
            await task
