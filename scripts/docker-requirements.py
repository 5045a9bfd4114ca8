"""Print the pinned-by-range requirements of igw and the extras the image installs, one per line.

Used by the Dockerfile to install dependencies in their own cached layer before the code is
copied (setuptools needs the package directories to install the project itself).
Usage: python scripts/docker-requirements.py setup.cfg fast redis yaml
"""

from __future__ import annotations

import configparser
import sys


def requirements(setup_cfg: str, extras: list[str]) -> list[str]:
    config = configparser.ConfigParser()
    if not config.read(setup_cfg):
        raise SystemExit(f"cannot read {setup_cfg}")

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    found = lines(config["options"]["install_requires"])
    for extra in extras:
        for line in lines(config["options.extras_require"][extra]):
            if line.startswith("igw["):
                raise SystemExit(f"extra {extra!r} refers to other extras; name them directly")
            found.append(line)
    return found


if __name__ == "__main__":
    sys.stdout.write("\n".join(requirements(sys.argv[1], sys.argv[2:])) + "\n")
