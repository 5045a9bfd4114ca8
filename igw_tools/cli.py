"""The ``igw`` command. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from consumers.agent_replies import command as agent_command
from consumers.analytics import command as analytics_command
from gateway import command as gateway_command
from igw import __version__
from igw.errors import StartupError
from igw_tools.commands import check, dev, erase, graph_emulator, replay, simulate, topics

# Each module defines ``register(subparsers)``: it adds one parser and sets ``func`` to a callable
# taking the parsed arguments and returning the exit status.
COMMANDS = (
    gateway_command,
    dev,
    graph_emulator,
    agent_command,
    analytics_command,
    simulate,
    check,
    topics,
    replay,
    erase,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igw", description="Instagram and Messenger webhooks into Kafka, agent replies and analytics."
    )
    parser.add_argument("--version", action="version", version=f"igw {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A process that cannot start (igw.errors.StartupError: a bad or missing
    setting, a taken port, no Kafka, a rules file that does not parse, no account to send from)
    ends here: one line on stderr, exit status 2, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StartupError as exc:
        sys.stderr.write(error_line(args.command, exc) + "\n")
        return 2
    except KeyboardInterrupt:
        return 130


def error_line(command: str, exc: StartupError) -> str:
    """``igw <command>: <what is wrong> (<what to do>)``, on one line whatever the parts hold."""
    return " ".join(f"igw {command}: {exc} ({exc.remedy})".split())


if __name__ == "__main__":
    sys.exit(main())
