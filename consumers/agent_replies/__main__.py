"""``python -m consumers.agent_replies``: the same as ``igw agent``."""

from __future__ import annotations

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main(["agent", *sys.argv[1:]]))
