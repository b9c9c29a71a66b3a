"""The one progress display of ``run --embedded`` and ``demo`` (consumer.progress)."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator

import pytest
import structlog
from rich.console import Console

from consumer.progress import Display, ProgressReport, live_wanted, open_display

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal_logs() -> Iterator[Tty]:
    """The root logger writing console-rendered structlog lines to a fake terminal, as
    ``configure_logging`` sets it up on a terminal (restored afterwards)."""
    terminal = Tty()
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=True),
            ]
        )
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield terminal
    finally:
        root.handlers[:], root.level = saved


def _chunks(output: str) -> list[str]:
    """What ends up on each terminal row: split at newlines and carriage returns, control
    sequences removed."""
    return [ANSI.sub("", chunk).rstrip() for chunk in re.split(r"[\r\n]", output)]


class TestLiveDisplay:
    def test_logs_render_whole_above_the_bar(self, terminal_logs: Tty) -> None:
        """Log lines written while the bar is live (from another thread too) each land on a row
        of their own, never mid-line with the bar, and the handler gets its terminal back."""
        console = Console(file=terminal_logs, force_terminal=True, width=100, no_color=False)
        display = Display(console=console, emit=lambda _: None, stdout=io.StringIO())
        logger = logging.getLogger("test.progress")
        with display.progress("synced", 40, "jobs") as progress:
            for n in range(40):
                progress.update(n + 1, events=n * 10)
                logger.info("log-line-%02d with some words after it", n)
                if n % 10 == 0:
                    worker = threading.Thread(target=logger.info, args=("thread-line-%02d", n))
                    worker.start()
                    worker.join()
        output = terminal_logs.getvalue()
        chunks = _chunks(output)
        for n in range(40):
            rows = [chunk for chunk in chunks if f"log-line-{n:02d}" in chunk]
            assert len(rows) == 1, rows
            assert rows[0].endswith(f"log-line-{n:02d} with some words after it"), rows[0]
            assert "synced" not in rows[0]
        assert sum("thread-line-" in chunk and "synced" not in chunk for chunk in chunks) == 4
        assert any(chunk.startswith("synced") and "40/40" in chunk for chunk in chunks)
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        assert handler.stream is terminal_logs

    def test_say_goes_above_the_bar_unwrapped(self) -> None:
        """A line that stays, on the same terminal, is printed whole even when wider than it."""
        terminal = Tty()
        console = Console(file=terminal, force_terminal=True, width=40)
        display = Display(console=console, emit=lambda _: None, stdout=terminal)
        command = "BASICSYNC_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 basicsync inspect demo-1"
        with display.progress("synced", 2, "jobs") as progress:
            display.say(command)
            progress.update(2)
        assert command in _chunks(terminal.getvalue())

    def test_no_color_removes_colours(self) -> None:
        """``NO_COLOR`` set: the live bar is drawn without colour codes."""
        terminal = Tty()
        display = open_display(
            "console", emit=lambda _: None, stderr=terminal, environ={"NO_COLOR": "1"}
        )
        assert display.console is not None
        assert display.console.no_color
        with display.progress("demo", 10, "events") as progress:
            progress.update(5)
        colours = re.findall(r"\x1b\[([0-9;]*)m", terminal.getvalue())
        assert not [c for c in colours if re.search(r"(^|;)(3[0-8]|9[0-7]|4[0-8])(;|$)", c)]


class TestPlainDisplay:
    @pytest.mark.parametrize(
        ("log_format", "stream", "environ"),
        [
            ("console", io.StringIO(), {}),  # not a terminal
            ("json", Tty(), {}),  # JSON logs on a terminal
            ("auto", Tty(), {"TERM": "dumb"}),
        ],
    )
    def test_no_live_display(
        self, log_format: str, stream: io.StringIO, environ: dict[str, str]
    ) -> None:
        """Not a capable terminal, or JSON logs: no live display."""
        assert not live_wanted(log_format, stream, environ)
        assert not open_display(log_format, emit=print, stderr=stream, environ=environ).live

    def test_reports_are_paced_plain_and_end_with_the_final_state(self) -> None:
        """A plain report at most every interval and always the last state; no ANSI or
        carriage returns anywhere in the output."""
        err, out = io.StringIO(), io.StringIO()
        now = [0.0]
        reports: list[ProgressReport] = []

        def emit(report: ProgressReport) -> None:
            reports.append(report)
            err.write(report.line() + "\n")

        display = open_display("json", emit=emit, stderr=err, stdout=out, interval_s=5.0)
        display._clock = lambda: now[0]
        with display.progress("synced", 10, "jobs") as progress:
            for n in range(1, 11):
                now[0] = n * 1.0
                progress.update(n, events=n * 3)
        display.say("done: 10/10")
        assert [r.completed for r in reports] == [1, 6, 10]
        assert reports[-1].line() == "synced: 10/10 jobs | events 30 | 10.0s"
        assert out.getvalue() == "done: 10/10\n"
        for text in (err.getvalue(), out.getvalue()):
            assert "\x1b" not in text
            assert "\r" not in text

    def test_run_reports_progress_as_a_log_line(self) -> None:
        """``run``'s plain progress is a log line with its counts as fields (JSON mode)."""
        from consumer.embedded import log_progress

        with structlog.testing.capture_logs() as logs:
            log_progress(ProgressReport("synced", 3, 5, "jobs", 1.25, {"events": 9}))
        assert logs == [
            {
                "event": "demo_progress",
                "log_level": "info",
                "synced": 3,
                "jobs": 5,
                "elapsed_s": 1.2,
                "events": 9,
            }
        ]
