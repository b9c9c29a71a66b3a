"""What batched production saves the checkpoint: one ``send_batch`` per partition against one
``send`` (a future and a callback) per record, in the same Kafka transaction.

    python -m tests.bench.bench_batching --bootstrap HOST:PORT [--rounds N]

Both ways commit the same records and an input offset in one transaction each, interleaved round
by round on one broker: ``PartitionProducer.commit`` as the consumer runs it, and the
per-record loop it replaced (kept here, only for this comparison). Prints the median wall time and
the median CPU time of this process per checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.kafka.transactions import OutRecord, PartitionProducer

#: (job states of ~4 kB, result records of ~440 bytes) per checkpoint
SHAPES = {"backlog": (500, 500), "live": (5, 5)}


def _options(bootstrap: str) -> dict[str, object]:
    return {"bootstrap_servers": bootstrap, "acks": "all", "enable_idempotence": True,
            "linger_ms": 5, "max_batch_size": 1 << 20, "compression_type": "zstd"}  # fmt: skip


async def _per_record(
    producer: AIOKafkaProducer, records: list[OutRecord], offsets: dict[TopicPartition, int],
    group: str,
) -> None:  # fmt: skip
    """The checkpoint's transaction before batching: one send per record."""
    await producer.begin_transaction()
    acks = [
        await producer.send(r.topic, value=r.value, key=r.key, partition=r.partition)
        for r in records
    ]
    await producer.send_offsets_to_transaction(offsets, group)
    await asyncio.gather(*acks)
    await producer.commit_transaction()


def _records(changelog: str, results: str, shape: tuple[int, int], n: int) -> list[OutRecord]:
    states = [
        OutRecord(changelog, f"job-{i}".encode(), b"s" * 100 + str(n).encode() * 4000, 0)
        for i in range(shape[0])
    ]
    outcomes = [
        OutRecord(results, f"job-{i}".encode(), b'{"ok":true}' * 40, None) for i in range(shape[1])
    ]
    return states + outcomes


async def measure(bootstrap: str, rounds: int) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    changelog, results, source = (f"bench-batch-{n}-{suffix}" for n in ("state", "ok", "in"))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(changelog, 1, 1), NewTopic(results, 3, 1), NewTopic(source, 1, 1)]
    )
    await asyncio.sleep(1.0)
    batched = PartitionProducer(
        lambda **extra: AIOKafkaProducer(**_options(bootstrap), **extra),
        f"bench-batch-{suffix}",
        0,
        max_record_bytes=17 << 20,
    )
    group = f"bench-single-{suffix}"
    single = AIOKafkaProducer(**_options(bootstrap), transactional_id=f"{group}.0")
    await batched.start()
    await single.start()
    figures: dict[str, float] = {}
    try:
        tp = TopicPartition(source, 0)
        for name, shape in SHAPES.items():
            wall: dict[str, list[float]] = {"batched": [], "per record": []}
            cpu: dict[str, list[float]] = {"batched": [], "per record": []}
            for n in range(rounds):
                records, offsets = _records(changelog, results, shape, n), {tp: n + 1}

                async def one_batch(r: list[OutRecord] = records, o: dict[TopicPartition, int]
                                    = offsets) -> None:  # fmt: skip
                    await batched.commit(r, o)

                async def per_record(r: list[OutRecord] = records, o: dict[TopicPartition, int]
                                     = offsets) -> None:  # fmt: skip
                    await _per_record(single, r, o, group)

                runs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("batched", one_batch),
                    ("per record", per_record),
                ]
                for mode, run in runs if n % 2 else runs[::-1]:
                    started, used = time.perf_counter(), time.process_time()
                    await run()
                    wall[mode].append(time.perf_counter() - started)
                    cpu[mode].append(time.process_time() - used)
            for mode in wall:  # the first round warms up
                figures[f"{name} {mode} wall ms"] = statistics.median(wall[mode][1:]) * 1000
                figures[f"{name} {mode} cpu ms"] = statistics.median(cpu[mode][1:]) * 1000
    finally:
        await batched.stop()
        await single.stop()
        await admin.delete_topics([changelog, results, source])
        await admin.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:17092")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.bootstrap, args.rounds))
    for name, value in figures.items():
        print(f"{name:<28} {value:8.1f}")
    for shape in SHAPES:
        ratio = figures[f"{shape} per record cpu ms"] / figures[f"{shape} batched cpu ms"]
        print(f"{shape}: per record / batched CPU = {ratio:.2f}")


if __name__ == "__main__":
    main()
