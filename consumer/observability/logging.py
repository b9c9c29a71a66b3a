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
"""

from __future__ import annotations

import asyncio.streams
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType

import structlog

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


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library once, at the entry point."""
    is_terminal = sys.stderr.isatty()
    use_json = log_format == "json" or (log_format == "auto" and not is_terminal)
    shared = shared_processors(use_json)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=use_colors(os.environ, is_terminal))
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # aiokafka is chatty at INFO about every (re)join; its warnings still come through.
    logging.getLogger("aiokafka").setLevel(max(_LEVELS[level], logging.WARNING))
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, DeliveredConnectionErrors) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(DeliveredConnectionErrors())
