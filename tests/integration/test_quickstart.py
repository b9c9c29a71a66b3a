"""The quick start (``run --embedded`` with nothing configured) leaves something to look at."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import time

import pytest

from consumer.config import Settings
from consumer.demo import DemoPlan
from consumer.embedded import run_embedded
from consumer.progress import Display, ProgressReport

pytestmark = pytest.mark.integration


async def _run_as_printed(line: str) -> tuple[int, str, str]:
    """Run a printed ``NAME=value program args...`` line as a shell would (without our
    ``BASICSYNC_*`` environment)."""
    words = shlex.split(line)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASICSYNC_")}
    while "=" in words[0] and not words[0].startswith(("/", ".")):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    process = await asyncio.create_subprocess_exec(
        *words, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestQuickStart:
    async def test_the_last_lines_are_check_and_inspect_commands_that_work(
        self, kafka_bootstrap: str
    ) -> None:
        """After the demo converged, the run prints a ``check`` and an ``inspect`` command line
        naming the broker (and a demo job); run as printed, check passes and inspect shows the
        job settled. Progress went through the display, reported at least once."""
        out = io.StringIO()
        reports: list[ProgressReport] = []
        display = Display(console=None, emit=reports.append, stdout=out)
        port = int(kafka_bootstrap.rsplit(":", 1)[1])
        code = await run_embedded(
            Settings(),
            asyncio.Event(),
            plan=DemoPlan(jobs=5, seed=int(time.time())),
            kafka_port=port,
            display=display,
        )
        lines = out.getvalue().splitlines()
        assert code == 0, lines
        assert reports[-1].completed == reports[-1].total == 5
        assert lines[0].startswith("streamed ")
        assert lines[1].startswith("done: 5/5 demo jobs")
        assert "kafka.sh stop" in lines[-3]
        check, inspect = lines[-2].strip(), lines[-1].strip()
        assert check.startswith(f"BASICSYNC_KAFKA__BOOTSTRAP_SERVERS={kafka_bootstrap} ")
        assert shlex.split(check)[-2:] == ["check", "--skip-gateway"]
        assert shlex.split(inspect)[-2] == "inspect"

        status, shown, err = await _run_as_printed(check)
        assert status == 0, shown + err
        assert "FAIL" not in shown
        assert "ok    kafka" in shown

        status, shown, err = await _run_as_printed(inspect)
        assert status == 0, err
        job = json.loads(shown)
        assert job["clientJobId"] == shlex.split(inspect)[-1]
        assert job["settled"] is True
