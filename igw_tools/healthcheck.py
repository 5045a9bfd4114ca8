"""Container health check: exit 0 when ``/healthz`` answers 200 (stdlib only, starts fast).

``python -m igw_tools.healthcheck [URL]``; the default is the gateway's own
``http://127.0.0.1:8080/healthz``; the agent and analytics pass their metrics port's URL.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def healthy(url: str = DEFAULT_URL, timeout: float = 2.0) -> bool:
    if not url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError(f"the health check only calls this container itself, not {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback http only, checked above
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return 0 if healthy(args[0] if args else DEFAULT_URL) else 1


if __name__ == "__main__":
    sys.exit(main())
