"""The quick start (``run --embedded`` with nothing configured) leaves something to look at."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time

import pytest

from consumer.config import Settings
from consumer.demo import DemoPlan
from consumer.embedded import run_embedded

pytestmark = pytest.mark.integration


class TestQuickStart:
    async def test_the_last_line_is_an_inspect_command_that_works(
        self, kafka_bootstrap: str
    ) -> None:
        """After the demo converged, the run names the broker and a demo job; that command,
        run as printed, shows the job settled."""
        lines: list[str] = []
        port = int(kafka_bootstrap.rsplit(":", 1)[1])
        code = await run_embedded(
            Settings(),
            asyncio.Event(),
            plan=DemoPlan(jobs=5, seed=int(time.time())),
            kafka_port=port,
            progress=lines.append,
        )
        assert code == 0, lines
        hint = lines[-1]
        command = hint.split("with: ", 1)[1].split("  (", 1)[0]
        assignment, program, subcommand, job = shlex.split(command)
        assert (program, subcommand) == ("basicsync", "inspect")
        name, _, servers = assignment.partition("=")
        assert (name, servers) == ("BASICSYNC_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASICSYNC_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "inspect",
            job,
            env={**env, name: servers},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        shown = json.loads(out)
        assert shown["clientJobId"] == job
        assert shown["settled"] is True
