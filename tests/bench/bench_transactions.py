"""What Kafka transactions cost the checkpoint: the same writes with and without them.

    python -m tests.bench.bench_transactions [--bootstrap HOST:PORT] [--rounds N]

The consumer has no switch to turn transactions off (they are what fences a member that lost
its partitions), so this measures the checkpoint's own work both ways, interleaved round by
round against one broker:

- **transactional**: ``PartitionProducer.commit`` as the consumer runs it: begin, the records,
  ``send_offsets_to_transaction``, every ack, commit;
- **idempotent**: what a checkpoint without fencing would do: an idempotent producer sends the
  same records in the same batches (one ``create_batch``/``send_batch`` per topic partition),
  waits for every ack, then the consumer group commits the offsets.

Three shapes: a *live* checkpoint (5 job states and 5 result records), a *backlog* checkpoint
(500 and 500) and an *intent* (1 state: the commit before each post). It prints milliseconds per
checkpoint (median), records per second, and the time ratio with / without transactions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.kafka.transactions import OutRecord, PartitionProducer

#: name: (job states, result records) per checkpoint
SHAPES = {"live": (5, 5), "backlog": (500, 500), "intent": (1, 0)}
STATE_BYTES = 8_800  # a typical 13-step job's changelog value
RESULT_BYTES = 600


def _producer_options(bootstrap: str) -> dict[str, Any]:
    """The consumer's producer settings (consumer/app.py)."""
    return {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
    }


def _records(changelog: str, results: str, shape: tuple[int, int], n: int) -> list[OutRecord]:
    states, outcomes = shape
    state = os.urandom(STATE_BYTES // 2).hex().encode()
    result = os.urandom(RESULT_BYTES // 2).hex().encode()
    return [
        *(OutRecord(changelog, f"job-{n}-{i}".encode(), state, 0) for i in range(states)),
        *(OutRecord(results, f"job-{n}-{i}".encode(), result, None) for i in range(outcomes)),
    ]


async def _send_batched(producer: AIOKafkaProducer, records: list[OutRecord]) -> None:
    """``records`` sent as ``PartitionProducer`` sends them (one batch per topic partition
    while it fits), every ack awaited: the same writes, without the transaction."""
    by_partition: dict[tuple[str, int], list[OutRecord]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition or 0), []).append(record)
    acks = []
    for (topic, partition), group in by_partition.items():
        batch = producer.create_batch()
        for record in group:
            if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                batch.close()
                acks.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=record.key, value=record.value, timestamp=None)
        batch.close()
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*acks)


async def measure_transactions(bootstrap: str, rounds: int = 20) -> dict[str, Any]:
    """Figures for the benchmark's table: ms per checkpoint and records/s, both ways."""
    suffix = uuid.uuid4().hex[:8]
    changelog, results, source = (f"bench-tx-{n}-{suffix}" for n in ("state", "ok", "in"))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(changelog, 1, 1, topic_configs={"cleanup.policy": "compact"}),
                NewTopic(results, 1, 1),
                NewTopic(source, 1, 1),
            ]
        )
        await asyncio.sleep(1.0)
        return await _measure(bootstrap, changelog, results, source, suffix, rounds)
    finally:
        await admin.delete_topics([changelog, results, source])
        await admin.close()


async def _measure(
    bootstrap: str, changelog: str, results: str, source: str, suffix: str, rounds: int
) -> dict[str, Any]:
    group = f"bench-tx-{suffix}"
    transactional = PartitionProducer(
        lambda **extra: AIOKafkaProducer(**_producer_options(bootstrap), **extra), group, 0
    )
    idempotent = AIOKafkaProducer(**_producer_options(bootstrap))
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{group}-idem", enable_auto_commit=False
    )
    tp = TopicPartition(source, 0)
    await transactional.start()
    await idempotent.start()
    await committer.start()
    committer.assign([tp])
    figures: dict[str, Any] = {}
    try:
        for name, shape in SHAPES.items():
            times: dict[str, list[float]] = {"transactional": [], "idempotent": []}
            for n in range(rounds):
                records = _records(changelog, results, shape, n)
                offsets = {tp: n + 1}

                async def with_txn(
                    records: list[OutRecord] = records, offsets: dict[TopicPartition, int] = offsets
                ) -> None:
                    await transactional.commit(records, offsets)

                async def without(
                    records: list[OutRecord] = records, offsets: dict[TopicPartition, int] = offsets
                ) -> None:
                    await _send_batched(idempotent, records)
                    await committer.commit(offsets)

                runs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("transactional", with_txn),
                    ("idempotent", without),
                ]
                for mode, run in runs if n % 2 else runs[::-1]:
                    started = time.perf_counter()
                    await run()
                    times[mode].append(time.perf_counter() - started)
            count = sum(shape)
            for mode, seconds in times.items():
                median = statistics.median(seconds[1:])  # the first round warms up
                figures[f"checkpoint {name} {mode} ms"] = round(median * 1000, 2)
                figures[f"checkpoint {name} {mode} records/s"] = round(count / median)
            figures[f"checkpoint {name} time with/without transactions"] = round(
                figures[f"checkpoint {name} transactional ms"]
                / max(figures[f"checkpoint {name} idempotent ms"], 1e-6),
                2,
            )
    finally:
        await transactional.stop()
        await idempotent.stop()
        await committer.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:17092")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    figures = asyncio.run(measure_transactions(args.bootstrap, args.rounds))
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
