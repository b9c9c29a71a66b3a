"""Ceiling, live: the least a consumer can do to post live traffic, for the latency goal.

Consumes the input (no state kept beyond memory, no changelog, no result records, offsets
committed by aiokafka's own timer), folds each event into its job's document with our pure
reducer, and posts a job's latest document ``--debounce`` after the first event that changed it
(ours' default debounce; ours waits from the last change, so this is never later) or at once
when the job has ended (as ours does), ``--concurrency`` requests at once, a job's requests one
after another.
A job changed again while its request is out is posted again when that request ends, with
whatever it holds then: so it coalesces exactly as far as it falls behind. Nothing survives a
restart and nothing is retried. Its latency at a given rate is the floor any consumer that posts
right documents reaches on this machine at that rate; ours does all of this and more. Prints a
``partitions_assigned`` line when it has its partitions; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from consumer.domain.basicsync import encode_body
from consumer.domain.job import JobState, is_terminal
from tests.bench.ceiling_post import token
from tests.bench.common import fold_records, run_arguments


class _SayAssigned(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        print(json.dumps({"event": "partitions_assigned", "partitions": len(assigned)}), flush=True)


async def run(
    bootstrap: str, topics: list[str], group: str, base_url: str, limit: int, debounce: float
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    consumer.subscribe(topics, listener=_SayAssigned())
    jobs: dict[str, JobState] = {}
    ready: asyncio.Queue[str] = asyncio.Queue()
    waiting: dict[str, asyncio.TimerHandle | None] = {}  # its debounce, None once ready
    sending: set[str] = set()
    again: set[str] = set()  # changed while its request was out

    def now_ready(job: str) -> None:
        waiting[job] = None
        ready.put_nowait(job)

    last_change: dict[str, float] = {}

    def changed(job: str) -> None:
        """Called at each change, and once more when a request of a job changed meanwhile
        ends: then the debounce counts from its last change, as ours does."""
        if job in sending:
            again.add(job)
            last_change[job] = loop.time()
            return
        since = last_change.pop(job, loop.time())
        if job in waiting:
            timer = waiting[job]
            if timer is not None and is_terminal(jobs[job]):
                timer.cancel()
                now_ready(job)
        elif is_terminal(jobs[job]):
            now_ready(job)
        else:
            waiting[job] = loop.call_later(max(0.0, since + debounce - loop.time()), now_ready, job)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
        headers = {
            "Authorization": f"Bearer {await token(session, base_url)}",
            "Content-Type": "application/json",
        }
        url = f"{base_url}/jobs/v1/basicSync"

        async def poster() -> None:
            while True:
                job = await ready.get()
                del waiting[job]
                sending.add(job)
                try:
                    body = encode_body(jobs[job])
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                finally:
                    sending.discard(job)
                if job in again:
                    again.discard(job)
                    changed(job)

        posters = [asyncio.create_task(poster()) for _ in range(limit)]
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    for state in fold_records(records, jobs):
                        changed(state.client_job_id)
        finally:
            for task in posters:
                task.cancel()
            await consumer.stop()


def main() -> None:
    parser = run_arguments(__doc__.splitlines()[0])
    parser.add_argument("--debounce", type=float, default=0.2, help="seconds")
    args = parser.parse_args()
    asyncio.run(
        run(
            args.bootstrap,
            args.topics.split(","),
            args.group,
            args.sandbox,
            args.concurrency,
            args.debounce,
        )
    )


if __name__ == "__main__":
    main()
