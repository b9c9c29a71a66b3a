"""Log lines carry the record or job they are about (``consumer.observability.logging``)."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    NodeNotReadyError,
    TopicAuthorizationFailedError,
)

from consumer.observability.logging import (
    KAFKA_CLIENT_REPEAT_S,
    DeliveredConnectionErrors,
    KafkaClientRepeats,
    bound_record,
    log_handler,
    shared_processors,
)


def json_logger(stream: io.StringIO) -> Any:
    """A standard-library logger behind the production chain and the JSON renderer, writing
    to ``stream`` only (not propagated, so the global logging set-up is not touched)."""
    target = logging.getLogger(f"test_logging.{id(stream)}")
    target.propagate = False
    target.setLevel(logging.INFO)
    target.handlers[:] = [logging.StreamHandler(stream)]
    processors: list[structlog.types.Processor] = [
        *shared_processors(use_json=True),
        structlog.processors.JSONRenderer(),
    ]
    return structlog.wrap_logger(
        target, processors=processors, wrapper_class=structlog.stdlib.BoundLogger
    )


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestBoundRecord:
    def test_the_bound_context_is_merged_first(self) -> None:
        """merge_contextvars leads the chain, so every processor after it sees the fields."""
        for use_json in (True, False):
            first = shared_processors(use_json)[0]
            assert first is structlog.contextvars.merge_contextvars

    def test_a_line_inside_carries_the_record_and_one_outside_does_not(self) -> None:
        """Inside the block a JSON line has topic, partition, offset and client_job_id; after
        it, none of them."""
        stream = io.StringIO()
        log = json_logger(stream)
        with bound_record(topic="in", partition=3, offset=42, client_job_id="job-1"):
            log.info("event_applied", version=7)
        log.info("after")
        inside, after = lines(stream)
        assert inside["event"] == "event_applied"
        assert inside["version"] == 7
        assert (inside["topic"], inside["partition"], inside["offset"]) == ("in", 3, 42)
        assert inside["client_job_id"] == "job-1"
        assert not {"topic", "partition", "offset", "client_job_id"} & set(after)

    def test_fields_not_given_are_left_out_and_call_site_fields_win(self) -> None:
        """A job bound without a record has only client_job_id; a field the call passes
        itself is not overwritten by the bound one."""
        stream = io.StringIO()
        log = json_logger(stream)
        with bound_record(client_job_id="job-2"):
            log.info("sync_retry_scheduled")
            log.info("other_job", client_job_id="job-3")
        plain, explicit = lines(stream)
        assert plain["client_job_id"] == "job-2"
        assert not {"topic", "offset"} & set(plain)
        assert explicit["client_job_id"] == "job-3"

    async def test_the_context_stays_with_its_task(self) -> None:
        """Two tasks bound to two jobs log each their own job, interleaved at awaits."""
        stream = io.StringIO()
        log = json_logger(stream)

        async def work(job: str) -> None:
            with bound_record(client_job_id=job):
                await asyncio.sleep(0)
                log.info("posted")

        await asyncio.gather(work("a"), work("b"))
        assert sorted(line["client_job_id"] for line in lines(stream)) == ["a", "b"]


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def asyncio_records() -> Iterator[list[logging.LogRecord]]:
    """What asyncio's logger lets through :class:`DeliveredConnectionErrors`."""
    handler = Kept()
    handler.addFilter(DeliveredConnectionErrors())
    target = logging.getLogger("asyncio")
    target.addHandler(handler)
    try:
        yield handler.records
    finally:
        target.removeHandler(handler)


async def raised_by_a_reader(exc: Exception) -> BaseException:
    """``exc`` as a stream reader's owner gets it: set on the reader, raised by a read."""
    reader = asyncio.StreamReader()
    reader.set_exception(exc)
    try:
        await reader.readexactly(4)
    except BaseException as raised:
        return raised
    raise AssertionError("the read did not raise")


def raised_elsewhere(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as raised:
        return raised


async def left_unread(exc: BaseException) -> None:
    """A future holding ``exc`` that nobody reads, collected: asyncio's own report."""
    future = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    del future
    gc.collect()


class TestDeliveredConnectionErrors:
    async def test_a_connection_error_a_reader_raised_is_not_reported_again(self) -> None:
        """The refused certificate's case: the reader's owner had it, so no second traceback."""
        alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_UNKNOWN] sslv3 alert")
        with asyncio_records() as records:
            await left_unread(await raised_by_a_reader(alert))
            await left_unread(await raised_by_a_reader(ConnectionResetError(104, "reset")))
        assert records == []

    async def test_every_other_unread_exception_is_still_reported_whole(self) -> None:
        """A connection error no reader raised, and a bug raised through a reader: both kept,
        with their tracebacks."""
        with asyncio_records() as records:
            await left_unread(raised_elsewhere(ConnectionResetError(104, "reset")))
            await left_unread(await raised_by_a_reader(RuntimeError("a bug")))
        assert [type(r.exc_info[1]) for r in records if r.exc_info] == [
            ConnectionResetError,
            RuntimeError,
        ]
        assert all("never retrieved" in r.getMessage() for r in records)

    def test_other_asyncio_lines_pass(self) -> None:
        record = logging.LogRecord("asyncio", logging.WARNING, __file__, 1, "slow", None, None)
        assert DeliveredConnectionErrors().filter(record)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def kafka_client_lines(clock: Clock) -> Iterator[io.StringIO]:
    """The production handler (its JSON rendering and its filter, on ``clock``) behind the
    aiokafka loggers, as configured at start; the lines it writes."""
    stream = io.StringIO()
    handler = log_handler(stream, use_json=True)
    handler.filters[:] = [KafkaClientRepeats(clock=clock)]
    loggers = [logging.getLogger(name) for name in ("aiokafka", "consumer.test_kafka_lines")]
    for target in loggers:
        target.addHandler(handler)
        target.propagate = False
    try:
        yield stream
    finally:
        for target in loggers:
            target.removeHandler(handler)
            target.propagate = True


REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9092)")


class TestKafkaClientRepeats:
    def test_a_broker_restart_is_a_few_warnings_not_an_error_flood(self) -> None:
        """What aiokafka logged through a five-second broker restart (1,529 error lines in one
        member's log, these kinds): one warning per kind; the next of a kind, once the interval
        is over, says how many were dropped."""
        clock = Clock()
        client = logging.getLogger("aiokafka")
        coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
        fetcher = logging.getLogger("aiokafka.consumer.fetcher")
        with kafka_client_lines(clock) as stream:
            for _ in range(400):
                client.error("Unable connect to node with id %s: %s", 1, REFUSED)
                client.error("Unable to update metadata from %s", [1])
                fetcher.error("Failed fetch messages from %s: %s", 1, NodeNotReadyError("n"))
                coordinator.error(
                    "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
                )
                clock.now += 0.01
            clock.now += KAFKA_CLIENT_REPEAT_S
            client.error("Unable connect to node with id %s: %s", 1, REFUSED)
        found = lines(stream)
        assert {line["level"] for line in found} == {"warning"}
        assert len(found) == 5
        assert found[0]["event"].startswith("Unable connect to node with id 1: [Errno 111]")
        assert "repeated" not in found[0]
        assert found[-1]["event"] == found[0]["event"]
        assert found[-1]["repeated"] == 399

    def test_an_error_aiokafka_does_not_retry_stays_an_error_and_keeps_its_traceback(
        self,
    ) -> None:
        clock = Clock()
        sender = logging.getLogger("aiokafka.producer.sender")
        with kafka_client_lines(clock) as stream:
            sender.error("Got error: %s", TopicAuthorizationFailedError())
            try:
                raise RuntimeError("sender died")
            except RuntimeError:
                sender.exception("Unexpected error in sender routine")
            sender.exception("Unexpected error in sender routine")  # the same kind: dropped
        found = lines(stream)
        assert [line["level"] for line in found] == ["error", "error"]
        assert "TopicAuthorizationFailedError" in found[0]["event"]
        assert "RuntimeError: sender died" in found[1]["exception"]

    def test_kinds_are_counted_apart_and_other_loggers_never_dropped(self) -> None:
        """Another template, or the same one at another level, is another kind; a logger that
        is not aiokafka's (``aiokafkaesque`` included) passes every line as it came."""
        clock = Clock()
        client = logging.getLogger("aiokafka")
        ours = logging.getLogger("consumer.test_kafka_lines")
        with kafka_client_lines(clock) as stream:
            for _ in range(3):
                client.error("Unable connect to node with id %s: %s", 1, REFUSED)
                client.warning("Unable connect to node with id %s: %s", 1, REFUSED)
                client.error("Unable to update metadata from %s", [1])
                ours.error("Unable connect to node with id %s: %s", 1, REFUSED)
        found = lines(stream)
        assert [(line["logger"], line["level"]) for line in found[:3]] == [
            ("aiokafka", "warning"),
            ("aiokafka", "warning"),
            ("consumer.test_kafka_lines", "error"),
        ]
        assert len(found) == 2 + 3
        other = KafkaClientRepeats(clock=clock)
        record = logging.LogRecord("aiokafkaesque", logging.ERROR, __file__, 1, "x", None, None)
        assert all(other.filter(record) for _ in range(3))
        assert record.levelno == logging.ERROR
