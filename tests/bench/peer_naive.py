"""Peer, naive: the aiokafka loop many teams write first. One POST per event, commit per batch.

For each fetched batch: decode every event, fold it into the job's document kept in a dict
(our pure reducer, so the documents are right and the cost of assembly is the same as ours),
post the document as it stands after *each* event (once it has its ``workflowId``, without
which WorkfloPlus answers 400), then commit the batch. Requests of one job
go one after another, in event order (else an older document could land last); different jobs
go in parallel, ``--concurrency`` at most. No state survives a restart, no coalescing, no
retry: what is measured is the shape of the loop. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict

import aiohttp
from aiokafka import AIOKafkaConsumer

from consumer.domain.basicsync import encode_body
from consumer.domain.job import JobState
from tests.bench.ceiling_post import token
from tests.bench.common import fold_records, run_arguments


async def run(bootstrap: str, topics: list[str], group: str, base_url: str, limit: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2_000,
    )
    jobs: dict[str, JobState] = {}
    gate = asyncio.Semaphore(limit)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
        headers = {
            "Authorization": f"Bearer {await token(session, base_url)}",
            "Content-Type": "application/json",
        }
        url = f"{base_url}/jobs/v1/basicSync"

        async def post_in_order(bodies: list[bytes]) -> None:
            async with gate:
                for body in bodies:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()

        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    continue
                by_job: dict[str, list[bytes]] = defaultdict(list)
                for records in batch.values():
                    for state in fold_records(records, jobs):
                        by_job[state.client_job_id].append(encode_body(state))
                await asyncio.gather(*(post_in_order(bodies) for bodies in by_job.values()))
                await consumer.commit()
        finally:
            await consumer.stop()


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0]).parse_args()
    asyncio.run(
        run(args.bootstrap, args.topics.split(","), args.group, args.sandbox, args.concurrency)
    )


if __name__ == "__main__":
    main()
