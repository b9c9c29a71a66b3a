"""``kill -USR1 <pid>``: every asyncio task of the process and where it waits, in one log line.

A member that stops moving without an error is idle in its event loop, and a thread dump
(py-spy, gdb) shows nothing but the loop's ``select``: what waits on what is in the tasks'
stacks. That is how a dispatch loop that had swallowed its cancel, and so kept a stopping member
from exiting, was found (docs/design-notes.md §8). The stacks name code locations only, never
values, so no secret reaches the log this way.
"""

from __future__ import annotations

import asyncio
import io

import structlog

log = structlog.get_logger(__name__)


def task_stacks() -> list[dict[str, str]]:
    """Every task of the running loop: its name, ``pending`` or ``cancelling``, its stack."""
    found = []
    for task in sorted(asyncio.all_tasks(), key=lambda task: task.get_name()):
        stack = io.StringIO()
        task.print_stack(file=stack)
        found.append(
            {
                "name": task.get_name(),
                "state": "cancelling" if task.cancelling() else "pending",
                "stack": stack.getvalue(),
            }
        )
    return found


def log_task_stacks() -> None:
    """The SIGUSR1 handler: :func:`task_stacks` as one ``tasks_dumped`` line."""
    tasks = task_stacks()
    log.info("tasks_dumped", count=len(tasks), tasks=tasks)
