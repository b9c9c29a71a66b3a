"""Log lines carry the record or job they are about (``consumer.observability.logging``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import structlog

from consumer.observability.logging import bound_record, shared_processors


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
