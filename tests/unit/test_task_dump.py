"""The SIGUSR1 task dump: each task's name, state and stack."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from structlog.testing import capture_logs

from consumer.observability.task_dump import log_task_stacks, task_stacks


async def test_each_task_is_named_with_where_it_waits_and_whether_it_is_cancelling() -> None:
    gate = asyncio.Event()

    async def waits_at_the_gate() -> None:
        await gate.wait()

    task = asyncio.create_task(waits_at_the_gate(), name="at-the-gate")
    await asyncio.sleep(0)
    try:
        [found] = [t for t in task_stacks() if t["name"] == "at-the-gate"]
        assert found["state"] == "pending"
        assert "waits_at_the_gate" in found["stack"]
        task.cancel()
        [found] = [t for t in task_stacks() if t["name"] == "at-the-gate"]
        assert found["state"] == "cancelling"
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_the_dump_is_one_log_line_with_every_task() -> None:
    with capture_logs() as lines:
        log_task_stacks()
    [line] = lines
    assert line["event"] == "tasks_dumped"
    assert line["count"] == len(line["tasks"]) == len(asyncio.all_tasks())
