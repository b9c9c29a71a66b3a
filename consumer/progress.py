"""One progress display for the commands that show progress (``run --embedded``, ``demo``).

Two shapes, chosen once per command by ``open_display``:

- **live** when stderr is a terminal and logs are not JSON: a rich progress bar that stays on
  the bottom line. Log lines and the command's own lines render *above* it through the same
  ``rich.console.Console``: while the bar is live, the logging handlers that write to that
  terminal are pointed at the console (and ``sys.stderr`` is redirected to it), so a log line
  never tears the bar or lands mid-line. ``NO_COLOR`` (https://no-color.org) turns colour off.
- **plain** otherwise (stderr not a terminal, ``TERM=dumb``, or JSON logs): no live display and
  no control sequences; a plain progress report (``emit``) at most every ``interval`` seconds
  and once at the end. ``run`` reports it as a log line, ``demo`` as a line on stderr.

Lines that stay (``Display.say``: what was sent, the result, commands to run next) go to
stdout as plain text, or above the bar when stdout is that same terminal.

rich rather than a hand-drawn bar: it already redraws one live region while other output
scrolls above it, across threads, and handles terminal width, ``NO_COLOR`` and ANSI input.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

Fields = Mapping[str, int | float | str]


@dataclass(frozen=True)
class ProgressReport:
    """Where a task stands: ``completed`` of ``total`` ``unit``, and extra counts."""

    label: str
    completed: int
    total: int
    unit: str
    elapsed_s: float
    fields: Fields = field(default_factory=dict)

    def line(self) -> str:
        """One plain line, e.g. ``synced: 12/200 jobs | events 180 | requests 12 | 1.0s``."""
        parts = [f"{self.label}: {self.completed}/{self.total} {self.unit}"]
        parts += [f"{name} {value}" for name, value in self.fields.items()]
        return " | ".join([*parts, f"{self.elapsed_s:.1f}s"])


class Tracker(Protocol):
    """One task's progress; ``update`` as often as convenient, the display paces itself."""

    def update(self, completed: int, **fields: int | float | str) -> None: ...


class Display:
    """Where a command's output goes: lines that stay (``say``) and one progress at a time."""

    def __init__(
        self,
        *,
        console: Console | None,
        emit: Callable[[ProgressReport], None],
        stdout: TextIO,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self._emit = emit
        self._stdout = stdout
        self._interval_s = interval_s
        self._clock = clock

    @property
    def live(self) -> bool:
        return self.console is not None

    def say(self, line: str) -> None:
        """A line that stays (never wrapped, so a command in it can be copied)."""
        if self.console is not None and _same_terminal(self._stdout, self.console.file):
            self.console.print(Text(line), soft_wrap=True)
        else:
            print(line, file=self._stdout, flush=True)

    @contextmanager
    def progress(self, label: str, total: int, unit: str) -> Iterator[Tracker]:
        """Track one task for the ``with`` block; its last state is shown when it ends."""
        if self.console is None:
            plain = _PlainTracker(label, total, unit, self._emit, self._interval_s, self._clock)
            try:
                yield plain
            finally:
                plain.finish()
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        bar = Progress(*columns, console=self.console, redirect_stdout=False)
        task = bar.add_task(label, total=max(total, 1), detail="")
        with bar, _logs_through(self.console):
            yield _LiveTracker(bar, task)


def open_display(
    log_format: str,
    *,
    emit: Callable[[ProgressReport], None],
    stderr: TextIO | None = None,
    stdout: TextIO | None = None,
    environ: Mapping[str, str] = os.environ,
    interval_s: float = 5.0,
) -> Display:
    """A live display on a terminal that shows console logs, a plain one otherwise."""
    stderr = stderr if stderr is not None else sys.stderr
    stdout = stdout if stdout is not None else sys.stdout
    console = None
    if live_wanted(log_format, stderr, environ):
        console = Console(file=stderr, no_color=bool(environ.get("NO_COLOR")), force_terminal=True)
    return Display(console=console, emit=emit, stdout=stdout, interval_s=interval_s)


def live_wanted(log_format: str, stderr: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether a live display fits: stderr is a (capable) terminal and logs are not JSON."""
    return log_format != "json" and stderr.isatty() and environ.get("TERM") != "dumb"


class _LiveTracker:
    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar = bar
        self._task = task

    def update(self, completed: int, **fields: int | float | str) -> None:
        detail = " | ".join(f"{name} {value}" for name, value in fields.items())
        self._bar.update(self._task, completed=completed, detail=detail)


class _PlainTracker:
    def __init__(
        self,
        label: str,
        total: int,
        unit: str,
        emit: Callable[[ProgressReport], None],
        interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._label, self._total, self._unit = label, total, unit
        self._emit = emit
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last_emit: float | None = None
        self._latest: tuple[int, dict[str, Any]] = (0, {})
        self._emitted_latest = False

    def update(self, completed: int, **fields: int | float | str) -> None:
        self._latest = (completed, fields)
        self._emitted_latest = False
        now = self._clock()
        if self._last_emit is None or now - self._last_emit >= self._interval_s:
            self._report(now)

    def finish(self) -> None:
        """The final state, unless it was the last one reported."""
        if not self._emitted_latest:
            self._report(self._clock())

    def _report(self, now: float) -> None:
        completed, fields = self._latest
        elapsed = now - self._started
        self._emit(ProgressReport(self._label, completed, self._total, self._unit, elapsed, fields))
        self._last_emit = now
        self._emitted_latest = True


class _ConsoleWriter:
    """A text stream that prints whole lines through a rich console (above a live display),
    keeping their ANSI colours; what a logging handler writes to instead of the terminal."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self.write("\n")

    def isatty(self) -> bool:
        return True


@contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    """Point the logging handlers that write to the console's terminal at the console for the
    ``with`` block, so their lines render above the live display (rich's ``Progress`` redirects
    ``sys.stderr`` itself; a handler keeps the stream it was given at set-up)."""
    writer = _ConsoleWriter(console)
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is console.file
    ]
    previous = [handler.setStream(writer) for handler in handlers]
    try:
        yield
    finally:
        writer.flush()
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


def _same_terminal(stream: TextIO, terminal: Any) -> bool:
    """Whether ``stream`` is a terminal showing what ``terminal`` writes (the same object, or
    both terminals: stdout and stderr of an interactive shell)."""
    return stream is terminal or (stream.isatty() and bool(terminal.isatty()))
