"""Helpers for the operator tools (simulate, check, replay): URLs of live gateways, running the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Sequence

import pytest

from igw_tools.cli import main
from tests.plugins.gateway import WEBHOOK, GatewayClient


@pytest.fixture
def webhook_url(gateway_client: GatewayClient) -> str:
    """The full webhook URL of the live test gateway."""
    return str(gateway_client.make_url(WEBHOOK))


async def run_cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run ``igw ARGV`` in a worker thread (it runs its own event loop) while this loop keeps serving.

    Returns the exit status, stdout and stderr.
    """
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(argv))

    status = await asyncio.wait_for(asyncio.to_thread(call), timeout=60)
    return status, out.getvalue(), err.getvalue()
