"""Children that end when their parent dies, even by SIGKILL (Linux's ``PR_SET_PDEATHSIG``).

``igw dev`` starts a broker and four igw processes in sessions of their own (so Ctrl-C reaches
``igw dev`` alone and it stops them in order). Without this, killing ``igw dev`` outright would
leave all of them running and holding their ports. The kernel sends the signal when the *thread*
that started the child ends, so start children from the thread that lives as long as the parent
(the event loop's), never from a worker thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["SUPPORTED", "die_with_parent"]

_PR_SET_PDEATHSIG: Final = 1
SUPPORTED: Final = sys.platform.startswith("linux")


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child receive ``sig`` when this process dies; None off Linux."""
    if not SUPPORTED:
        return None
    # Looked up here, before the fork: the child only makes the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between the fork and the prctl
            os.kill(os.getpid(), sig)

    return preexec
