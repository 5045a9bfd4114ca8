"""``python -m consumers.agent_replies``: the same as ``igw agent``."""

from __future__ import annotations

import argparse
import sys

from consumers.agent_replies.command import register
from gateway.errors import SettingsError


def main() -> int:
    parser = argparse.ArgumentParser(prog="igw")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", *sys.argv[1:]])
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"igw agent: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
