"""structlog set-up: JSON lines in production, a readable console locally.

``auto`` picks the console renderer when stderr is a terminal. Standard-library loggers
(aiokafka, aiohttp) are routed through the same processors so every line has one format.

Every line carries the context bound with :func:`bound_record` (topic, partition, offset,
``client_job_id``), merged in first by ``structlog.contextvars.merge_contextvars``, so a line
about a job says which one without each call site repeating it.

The console renderer colours only a terminal, and never when ``NO_COLOR`` is set to anything
but the empty string (https://no-color.org). ``NO_COLOR`` is read here, not in the settings:
it is a convention shared by every command-line tool of the user's, not a basicsync setting.

asyncio's "Future exception was never retrieved" is dropped for a connection error that a
stream reader already raised to its owner (see :class:`DeliveredConnectionErrors`): a refused
TLS certificate is then one line naming the cause, not that line plus a stray traceback.

aiokafka logs each retry of a broker it cannot reach as an error, many times a second: its
failures that it retries become warnings, and each kind of its lines is let through at most
once per :data:`KAFKA_CLIENT_REPEAT_S` (see :class:`KafkaClientRepeats`).
"""

from __future__ import annotations

import asyncio.streams
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

import structlog
from aiokafka.errors import KafkaError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def use_colors(environ: Mapping[str, str], is_terminal: bool) -> bool:
    """Whether the console renderer colours its output."""
    return is_terminal and not environ.get("NO_COLOR")


@contextmanager
def bound_record(
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    client_job_id: str | None = None,
) -> Iterator[None]:
    """Every log line inside the block carries the fields given (None ones are left out).

    Bound in a context variable: it holds for the awaits of this task (and tasks it starts),
    never for other tasks, and is unbound when the block ends.
    """
    fields = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "client_job_id": client_job_id,
    }
    given = {name: value for name, value in fields.items() if value is not None}
    with structlog.contextvars.bound_contextvars(**given):
        yield


#: The fields of :func:`bound_record` that name one record or job, not its partition.
_ONE_RECORD_FIELDS = ("offset", "client_job_id")


@contextmanager
def unbound_record() -> Iterator[None]:
    """Lines inside the block name no record or job :func:`bound_record` bound around it
    (the topic and partition stay).

    For work done for many records by whichever record's task happens to run it: a group
    commit run by one job's intent would otherwise name that job on every line it logs.
    """
    saved = structlog.contextvars.get_contextvars()
    structlog.contextvars.unbind_contextvars(*_ONE_RECORD_FIELDS)
    try:
        yield
    finally:
        structlog.contextvars.bind_contextvars(
            **{name: value for name, value in saved.items() if name in _ONE_RECORD_FIELDS}
        )


def shared_processors(use_json: bool) -> list[structlog.types.Processor]:
    """The processors of every line, structlog's and the standard library's, before rendering;
    the bound context first, so a call site's own fields win over it."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        shared.append(structlog.processors.format_exc_info)
    return shared


#: The start of asyncio's message for a future garbage-collected with its exception unread.
_UNRETRIEVED = "Future exception was never retrieved"
_STREAMS_FILE = asyncio.streams.__file__


class DeliveredConnectionErrors(logging.Filter):
    """Drops asyncio's report of an unread connection error that a stream reader delivered.

    ``StreamReaderProtocol.connection_lost`` hands one exception to both the stream reader
    (whose owner, aiokafka or aiohttp, reads it and reports the failure) and the protocol's own
    ``closed`` future, which nobody awaits. The protocol marks that future read in its
    ``__del__``; when the garbage collector finalizes the future first (both sit in one
    reference cycle, and a cycle's finalizers run in no set order) asyncio logs the exception
    again, traceback and all. A refused client certificate did so on about half the tries.

    Only an ``OSError`` whose traceback passes through ``asyncio/streams.py`` is dropped: that
    exception was raised to a reader, so its owner had it. Any other unread exception, ours
    included, is still logged whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(_UNRETRIEVED):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, OSError) and _raised_to_a_reader(exc.__traceback__))


def _raised_to_a_reader(traceback: TracebackType | None) -> bool:
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _STREAMS_FILE:
            return True
        traceback = traceback.tb_next
    return False


#: aiokafka's messages for a broker it cannot reach yet or a coordinator it lost, always
#: retried (the address refused or unknown, metadata not refreshed, a heartbeat not sent or
#: unanswered: it finds the coordinator again and rejoins).
_RETRIED = frozenset(
    {
        'Unable connect to "%s:%s": %s',
        "Unable connect to node with id %s: %s",
        "Unable to update metadata from %s",
        "Heartbeat send request failed: %s. Will retry.",
        "Heartbeat session expired - marking coordinator dead",
    }
)
#: Each kind of aiokafka line (its logger, level and message template) is let through at most
#: once in this many seconds.
KAFKA_CLIENT_REPEAT_S = 30.0
#: Kinds remembered at most; past it they are forgotten together (a message formatted before
#: it reached the logger would otherwise make a kind of every line).
_KINDS_KEPT = 256


class KafkaClientRepeats(logging.Filter):
    """aiokafka's lines as an operator can read them through a broker restart.

    aiokafka logs every retry against a broker it cannot reach as an error: a broker restarted
    for a few seconds left 1,529 error lines in one member's log, and each rolling restart of
    a cluster would page whoever alerts on errors, for failures that aiokafka retries and that
    end by themselves (the member's own signals say when they do not: ``checkpoint_retry``,
    ``/readyz``, ``basicsync_checkpoint_failing_seconds``). So, on the handler, for records of
    the ``aiokafka`` loggers only:

    - an error that aiokafka retries (one of :data:`_RETRIED`, or one naming a retriable
      ``KafkaError``) becomes a warning; every other error stays one, tracebacks included;
    - a line of a kind already let through within ``interval_s`` is dropped; the next line of
      that kind let through carries ``repeated``, how many were dropped since the last.
    """

    def __init__(
        self,
        interval_s: float = KAFKA_CLIENT_REPEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        #: per kind: when one was last let through, and how many were dropped since
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _is_kafka_client(record.name):
            return True
        if record.levelno == logging.ERROR and _retried(record):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self._interval_s:
            self._kinds[kind] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.repeated = seen[1]
        if seen is None and len(self._kinds) >= _KINDS_KEPT:
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        return True


def _is_kafka_client(name: str) -> bool:
    return name == "aiokafka" or name.startswith("aiokafka.")


def _retried(record: logging.LogRecord) -> bool:
    """Whether aiokafka retries what the error ``record`` reports (never one with a
    traceback: that is aiokafka's report of an unexpected failure)."""
    if record.exc_info:
        return False
    if record.msg in _RETRIED:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return any(isinstance(arg, KafkaError) and arg.retriable for arg in args)


def log_handler(stream: TextIO, *, use_json: bool, colors: bool = False) -> logging.Handler:
    """The handler every line goes through: the shared processors, the renderer, and
    :class:`KafkaClientRepeats` (whose ``repeated`` the formatter adds to the line)."""
    shared = shared_processors(use_json)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=colors)
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=["repeated"])],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(KafkaClientRepeats())
    return handler


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library once, at the entry point."""
    is_terminal = sys.stderr.isatty()
    use_json = log_format == "json" or (log_format == "auto" and not is_terminal)
    structlog.configure(
        processors=[
            *shared_processors(use_json),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = log_handler(sys.stderr, use_json=use_json, colors=use_colors(os.environ, is_terminal))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # aiokafka is chatty at INFO about every (re)join; its warnings still come through.
    logging.getLogger("aiokafka").setLevel(max(_LEVELS[level], logging.WARNING))
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, DeliveredConnectionErrors) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(DeliveredConnectionErrors())
