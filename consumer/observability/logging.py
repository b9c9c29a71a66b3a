"""structlog set-up: JSON lines in production, a readable console locally.

``auto`` picks the console renderer when stderr is a terminal. Standard-library loggers
(aiokafka, aiohttp) are routed through the same processors so every line has one format.

The console renderer colours only a terminal, and never when ``NO_COLOR`` is set to anything
but the empty string (https://no-color.org). ``NO_COLOR`` is read here, not in the settings:
it is a convention shared by every command-line tool of the user's, not a basicsync setting.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

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


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library once, at the entry point."""
    is_terminal = sys.stderr.isatty()
    use_json = log_format == "json" or (log_format == "auto" and not is_terminal)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=use_colors(os.environ, is_terminal))
    )
    if use_json:
        shared.append(structlog.processors.format_exc_info)
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
