"""The ``basicsync`` console command.

Each subcommand lives in its own module and registers itself through ``SUBCOMMANDS``; its
module is imported only when that subcommand runs, so ``basicsync --help`` stays fast and a
broken optional subsystem cannot stop the others from starting.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Protocol

from consumer import __version__


class Subcommand(Protocol):
    """What a subcommand module exposes: how to parse its options and how to run."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


#: name -> (module path, one-line help). The module must satisfy ``Subcommand``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "consumer.commands.run",
        "run the consumer (--embedded: local Kafka and the WorkfloPlus sandbox, for development)",
    ),
    "sandbox": ("consumer.testing.workfloplus.command", "run the local WorkfloPlus sandbox server"),
    "config": (
        "consumer.commands.config",
        "print the settings reference (environment variables, defaults)",
    ),
    "demo": ("consumer.commands.demo", "stream realistic demo job events to the input topics"),
    "redrive": (
        "consumer.commands.redrive",
        "re-send failed input events or re-sync failed jobs (dry run unless --apply)",
    ),
    "inspect": ("consumer.commands.inspect", "print a job's state and sync status (changelog)"),
    "check": (
        "consumer.commands.check",
        "check settings, Kafka, topics and WorkfloPlus; the exit code says what failed",
    ),
}


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the ``requested`` subcommand's module is imported for its options."""
    parser = argparse.ArgumentParser(
        prog="basicsync",
        description="Assemble job events from Kafka and sync them to WorkfloPlus basicSync.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_path, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_path)
        if name == requested:
            _load(module_path).add_arguments(sub)
    return parser


def _load(module_path: str) -> Subcommand:
    module: Subcommand = importlib.import_module(module_path)
    return module


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    if args.command is None:  # a usage error, as for any command missing its argument
        parser.print_help(sys.stderr)
        return 2
    try:
        result: int = _load(args._module).main(args)
    except BrokenPipeError:
        # The reader of stdout went away (`basicsync redrive | head`): stop quietly, like
        # other Unix tools. Point stdout at /dev/null so the interpreter's final flush does
        # not fail again, and exit as a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return result
