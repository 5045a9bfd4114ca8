"""The small HTTP server every consumer runs on ``--metrics-port``: metrics and health.

``/healthz`` says the process runs; ``/readyz`` asks the consumer's own readiness check (for
instance "the group has joined and the broker answers") and answers 503 when it fails, so an
orchestrator stops counting on a replica that cannot work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from igw.preflight import METRICS_LISTEN, listen_error

__all__ = ["Readiness", "create_metrics_app", "serve_metrics"]

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[bool]]
# What the consumer wants to say in the /readyz body, ready or not (e.g. {"sending": "paused"}).
Status = Callable[[], Mapping[str, str]]

readiness_key = web.AppKey("readiness", object)

# A readiness check that hangs must not hang the probe.
READINESS_TIMEOUT_SECONDS = 2.0


def create_metrics_app(
    registry: CollectorRegistry, readiness: Readiness | None = None, *, status: Status | None = None
) -> web.Application:
    """``/metrics`` from ``registry`` (the process's own: nothing else), ``/healthz`` always 200,
    ``/readyz`` from ``readiness`` (and ``status``)."""
    app = web.Application()

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        if readiness is None:
            return web.json_response({"status": "ready", **(dict(status()) if status is not None else {})})
        try:
            ready = await asyncio.wait_for(readiness(), READINESS_TIMEOUT_SECONDS)
        except Exception:  # a failing check means "not ready", whatever the failure
            log.debug("readiness check failed", exc_info=True)
            ready = False
        extra = dict(status()) if status is not None else {}
        if ready:
            return web.json_response({"status": "ready", **extra})
        return web.json_response({"status": "not ready", **extra}, status=503)

    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serve_metrics(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Run ``app`` on ``host:port`` (0 picks a free port) for the block; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:  # taken since the command's check_listen: another process was quicker
            raise listen_error(host, port, exc, METRICS_LISTEN) from None
        bound = port
        # aiohttp offers no public way to read the port it bound when asked for port 0.
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            bound = int(sockets[0].getsockname()[1])
        log.info("metrics and health on http://%s:%d/metrics", host, bound)
        yield bound
    finally:
        await runner.cleanup()
