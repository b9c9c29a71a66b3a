"""A start cancelled halfway leaves no connection open (``consumer.kafka.starting``).

aiokafka's bootstrap holds its first connection in a local variable while it waits for the
cluster's metadata; cancelled then, nothing closes it, and the garbage collector reports it as
"Unclosed AIOKafkaConnection" (a test failure here, an error line in production). The broker is
put behind a relay that answers a connection's first request (the API versions) at once and
holds every later answer back, so the cancellation lands exactly there.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from consumer.app import Running, endpoints_from, run_consumer
from consumer.kafka.starting import START_GRACE_S, start_client
from consumer.observability.stats import Stats
from consumer.testing.workfloplus.server import Sandbox
from tests.fixtures.kafka import MakeTopic
from tests.integration.harness import new_topics, settings_for

pytestmark = pytest.mark.integration

#: an aiokafka admin client, consumer or producer (aiokafka has no type hints)
Client = Any

CLIENTS: dict[str, Callable[[str], Client]] = {
    "admin": lambda servers: AIOKafkaAdminClient(bootstrap_servers=servers),
    "consumer": lambda servers: AIOKafkaConsumer(bootstrap_servers=servers, group_id=None),
    "producer": lambda servers: AIOKafkaProducer(bootstrap_servers=servers),
    "transactional producer": lambda servers: AIOKafkaProducer(
        bootstrap_servers=servers, transactional_id=f"start-{uuid.uuid4().hex[:8]}"
    ),
}


class HeldAnswers:
    """A relay to the broker: a connection's first answer passes at once, every later one
    ``hold_s`` late (None: never). ``asked`` is set when a connection sends its second request,
    the bootstrap's metadata request."""

    def __init__(self, broker: str, hold_s: float | None) -> None:
        self._host, port = broker.rsplit(":", 1)
        self._port = int(port)
        self._hold_s = hold_s
        self.asked = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        tasks = [
            asyncio.create_task(self._pass(reader, upstream_writer, self._count_requests())),
            asyncio.create_task(self._pass(upstream_reader, writer, self._delay_answers())),
        ]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _count_requests(self) -> Callable[[int], float | None]:
        def on_frame(index: int) -> float | None:
            if index == 1:
                self.asked.set()
            return 0.0

        return on_frame

    def _delay_answers(self) -> Callable[[int], float | None]:
        return lambda index: 0.0 if index == 0 else self._hold_s

    @staticmethod
    async def _pass(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: Callable[[int], float | None],
    ) -> None:
        index = 0
        try:
            while True:
                size = await reader.readexactly(4)
                frame = size + await reader.readexactly(int.from_bytes(size, "big"))
                wait = delay(index)
                if wait is None:
                    await asyncio.Event().wait()  # held for good
                    return
                if wait:
                    await asyncio.sleep(wait)
                writer.write(frame)
                await writer.drain()
                index += 1
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@asynccontextmanager
async def held_answers(broker: str, hold_s: float | None) -> AsyncIterator[tuple[str, HeldAnswers]]:
    relay = HeldAnswers(broker, hold_s)
    server = await asyncio.start_server(relay.relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", relay
    finally:
        server.close()
        await relay.close()
        await server.wait_closed()


@contextmanager
def unclosed_connections() -> Iterator[list[str]]:
    """The "Unclosed AIOKafkaConnection" warnings raised in the block (collected at its end),
    recorded instead of failing the test where they are raised: in a finalizer."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield found
        finally:
            gc.collect()
    found.extend(str(w.message) for w in caught if "Unclosed AIOKafkaConnection" in str(w.message))


async def cancel_when_asked(start: Any, relay: HeldAnswers) -> None:
    """Run ``start``, cancel it once the bootstrap's metadata request is out."""
    task = asyncio.ensure_future(start)
    await asyncio.wait_for(relay.asked.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def stop(client: Client) -> None:
    if isinstance(client, AIOKafkaAdminClient):
        await client.close()
    else:
        await client.stop()


class TestACancelledStart:
    @pytest.mark.parametrize("kind", CLIENTS)
    async def test_leaves_no_connection_open(self, kind: str, kafka_bootstrap: str) -> None:
        """Cancelled while the broker is slow to answer the bootstrap's metadata request, the
        start is let finish within its grace, and stopping the client closes everything."""
        with unclosed_connections() as unclosed:
            async with held_answers(kafka_bootstrap, hold_s=START_GRACE_S / 3) as (servers, relay):
                client = CLIENTS[kind](servers)
                try:
                    await cancel_when_asked(start_client(client.start()), relay)
                finally:
                    await stop(client)
        assert unclosed == []

    async def test_by_aiokafka_alone_leaves_its_bootstrap_connection_open(
        self, kafka_bootstrap: str
    ) -> None:
        """What ``start_client`` is for: aiokafka 0.14's own start, cancelled at the same
        moment, orphans the connection. Should aiokafka close it one day, this fails, and
        ``consumer.kafka.starting`` can go."""
        with unclosed_connections() as unclosed:
            async with held_answers(kafka_bootstrap, hold_s=START_GRACE_S / 3) as (servers, relay):
                client = AIOKafkaAdminClient(bootstrap_servers=servers)
                try:
                    await cancel_when_asked(client.start(), relay)
                finally:
                    await client.close()
        assert len(unclosed) == 1, unclosed

    async def test_against_a_hung_broker_holds_the_caller_for_the_grace_only(
        self, kafka_bootstrap: str
    ) -> None:
        """A broker that never answers does not hold a stop for aiokafka's request timeout:
        the cancellation is heard once the grace is over (the orphaned socket is then left to
        the garbage collector, as aiokafka leaves it)."""
        with unclosed_connections():
            async with held_answers(kafka_bootstrap, hold_s=None) as (servers, relay):
                client = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=30_000)
                try:
                    task = asyncio.ensure_future(start_client(client.start()))
                    await asyncio.wait_for(relay.asked.wait(), 10)
                    cancelled_at = time.monotonic()
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    took = time.monotonic() - cancelled_at
                finally:
                    await client.close()
        assert START_GRACE_S * 0.9 <= took < START_GRACE_S + 2, took

    async def test_a_consumer_stopped_during_its_first_bootstrap_leaves_no_connection_open(
        self, kafka_bootstrap: str, make_topic: MakeTopic, sandbox_in_process: Sandbox
    ) -> None:
        """The consumer stopped while its first client (the admin) waits for the cluster's
        metadata: it returns, and no connection is left behind (the flake this was found by:
        a denied member retried and stopped mid-start)."""
        topics = await new_topics(make_topic, partitions=1)
        with unclosed_connections() as unclosed:
            async with held_answers(kafka_bootstrap, hold_s=START_GRACE_S / 3) as (servers, relay):
                settings = settings_for(servers, sandbox_in_process, topics)
                stop_event = asyncio.Event()
                task = asyncio.create_task(
                    run_consumer(
                        settings, endpoints_from(settings), stop_event, Running(stats=Stats())
                    )
                )
                try:
                    await asyncio.wait_for(relay.asked.wait(), 10)
                    stop_event.set()
                    await asyncio.wait_for(task, START_GRACE_S + 10)
                finally:
                    if not task.done():
                        task.cancel()
                        with suppress(asyncio.CancelledError):
                            await task
        assert unclosed == []
