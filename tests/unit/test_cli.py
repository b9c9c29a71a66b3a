"""The console command's own behaviour: version, usage errors, help texts, colours, a closed
stdout, and error messages that keep their causes."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from consumer import __version__
from consumer.cli import build_parser, main
from consumer.config import KafkaSettings
from consumer.kafka.diagnose import (
    NO_KAFKA_ANSWER,
    describe,
    explain,
    security_problem,
    unreachable,
)
from consumer.observability.logging import use_colors

ROOT = Path(__file__).resolve().parents[2]


class TestTopLevel:
    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`basicsync --version` prints the package version, the one in pyproject.toml."""
        with pytest.raises(SystemExit) as exited:
            main(["--version"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.strip() == f"basicsync {__version__}"
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        assert project["project"]["version"] == __version__

    def test_bare_command_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`basicsync` without a subcommand prints the help on stderr and exits 2."""
        assert main([]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "COMMAND" in captured.err
        assert "run" in captured.err

    def test_sandbox_options_say_what_they_do_and_their_default(self) -> None:
        """Every option of `basicsync sandbox` has help text and shows its default."""
        parser = build_parser("sandbox")
        (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        sandbox = subparsers.choices["sandbox"]
        text = sandbox.format_help()
        options = [a for a in sandbox._actions if a.option_strings and a.dest != "help"]
        assert len(options) >= 8
        for action in options:
            assert action.help, action.dest
        assert text.count("(default:") == len(options)
        assert "(default: 8081)" in text

    def test_a_closed_stdout_ends_quietly(self) -> None:
        """`basicsync config | head -0`: no traceback, no error message, exit 128+SIGPIPE."""
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "config"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.close()  # before the child writes (it is still importing)
        _, err = process.communicate(timeout=60)
        assert err == b""
        assert process.returncode == 141


class TestColours:
    @pytest.mark.parametrize(
        ("environ", "terminal", "expected"),
        [
            ({}, True, True),
            ({}, False, False),
            ({"NO_COLOR": "1"}, True, False),
            ({"NO_COLOR": ""}, True, True),  # no-color.org: only a non-empty value counts
        ],
    )
    def test_no_color_is_honoured(
        self, environ: dict[str, str], terminal: bool, expected: bool
    ) -> None:
        """The console renderer colours a terminal unless NO_COLOR is set and not empty."""
        assert use_colors(environ, terminal) is expected


class TestKafkaErrorMessages:
    def test_the_type_name_is_not_repeated(self) -> None:
        """aiokafka puts the class name in the message; it appears once."""
        text = describe(KafkaConnectionError("Unable to bootstrap from [x]"))
        assert text == "KafkaConnectionError: Unable to bootstrap from [x]"

    def test_chained_causes_are_kept(self) -> None:
        """An exception raised from another names both."""
        try:
            try:
                raise OSError(111, "Connection refused")
            except OSError as inner:
                raise RuntimeError("could not start") from inner
        except RuntimeError as outer:
            text = describe(outer)
        assert (
            text == "RuntimeError: could not start; "
            "caused by ConnectionRefusedError: [Errno 111] Connection refused"
        )

    async def test_an_unknown_host_says_so(self) -> None:
        """A bootstrap server whose name does not resolve gets the resolver's reason."""
        (reason,) = await unreachable(["no-such-broker.invalid:9092"])
        assert reason.startswith("no-such-broker.invalid:9092: ")
        assert "not known" in reason or "resolution" in reason or "not found" in reason.lower()

    async def test_a_closed_port_is_refused(self) -> None:
        """A bootstrap server nobody listens on: Connection refused, in the bootstrap error."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = f"127.0.0.1:{port}"
        text = await explain(KafkaConnectionError("Unable to bootstrap"), [server])
        assert text == f"KafkaConnectionError: Unable to bootstrap ({server}: Connection refused)"

    async def test_a_reachable_server_says_kafka_did_not_answer(self) -> None:
        """When every server accepts TCP (a hung broker does: the kernel accepts for it), the
        message says so rather than leave the operator to guess at the network."""
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            text = await explain(KafkaConnectionError("timed out"), [f"127.0.0.1:{port}"])
        assert text == f"KafkaConnectionError: timed out ({NO_KAFKA_ANSWER})"

    async def test_a_timeout_of_asyncio_is_not_said_to_be_caused_by_a_cancel(self) -> None:
        """``asyncio.timeout`` raises TimeoutError from the CancelledError it used: the cancel
        is how the wait ended, not a cause an operator can act on."""
        with pytest.raises(TimeoutError) as timed_out:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        assert describe(timed_out.value) == "TimeoutError"

    async def test_a_listener_that_hangs_up_names_the_security_protocol(self) -> None:
        """A server that closes the connection at once, reached over PLAINTEXT, is worded as a
        security refusal naming the setting to check (the listener probably expects TLS)."""
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            servers = [f"127.0.0.1:{port}"]
            problem = await security_problem(KafkaSettings(bootstrap_servers=servers), servers, 2)
        assert problem is not None
        assert "BASICSYNC_KAFKA__SECURITY_PROTOCOL is PLAINTEXT" in str(problem)

    async def test_an_unreachable_server_is_no_security_problem(self) -> None:
        """Nobody listening is a reachability cause (see ``unreachable``), not a refusal."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        servers = [f"127.0.0.1:{port}"]
        assert await security_problem(KafkaSettings(bootstrap_servers=servers), servers, 2) is None
