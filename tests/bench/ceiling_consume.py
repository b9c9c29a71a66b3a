"""Ceiling A: a bare aiokafka consumer that reads every event of the workload and does nothing.

Same fetch settings as ours (``max_poll_records`` 2000, 1 MiB per partition fetch), a fresh
group, no commits. Reports when it has read ``--events`` records, then waits for SIGTERM.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from tests.bench.common import linger, report, run_arguments


async def consume(bootstrap: str, topics: list[str], group: str, events: int) -> None:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2_000,
        max_partition_fetch_bytes=1 << 20,
    )
    await consumer.start()
    try:
        seen = 0
        while seen < events:
            batch = await consumer.getmany(timeout_ms=1_000)
            for records in batch.values():
                seen += len(records)
        report(events=seen)
    finally:
        await consumer.stop()


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0]).parse_args()
    asyncio.run(consume(args.bootstrap, args.topics.split(","), args.group, args.events))
    linger()


if __name__ == "__main__":
    main()
