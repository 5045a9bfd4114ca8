"""The ``igw`` command. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway.errors import SettingsError

# Each module defines ``register(subparsers)``: it adds one parser and sets ``func`` to a callable
# taking the parsed arguments and returning the exit status.
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.commands.serve",
    "gateway.commands.dev",
    "consumers.send_api.emulator_command",
    "consumers.agent_replies.command",
    "consumers.analytics.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="igw", description="Instagram and Messenger webhooks into Kafka, agent replies and analytics."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"igw {args.command}: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
