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

from consumer.observability.logging import (
    DeliveredConnectionErrors,
    bound_record,
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
