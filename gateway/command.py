"""``igw gateway``: run the webhook gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from aiohttp import web

from gateway.access_log import ObservingAccessLogger, RedactedAccessLogger, quiet_server_log
from gateway.app import create_app
from gateway.garbage import tune_after_startup
from gateway.settings import GatewaySettings
from gateway.workers import Supervisor, mark_ready
from igw import __version__
from igw.errors import SettingsError
from igw.logs import configure_logging

# HTTP parser limits. Meta's requests carry a dozen short headers; the handshake's query string
# (token + challenge) is short. Over these, aiohttp answers 400 or 431 and closes the connection,
# so a hostile client holds at most max_headers * max_field_size bytes of buffer per connection.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64

log = logging.getLogger("gateway")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway",
        help="run the webhook gateway (Meta -> Kafka)",
        description="Serve Meta's webhook: verify, normalize and publish every event to Kafka. "
        "Settings come from the environment (docs/configuration.md).",
    )
    parser.add_argument("--host", default=os.environ.get("IGW_HOST", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--port", type=int, default=int(os.environ.get("IGW_PORT", "8080")), help="port to listen on")
    parser.add_argument("--log-level", default=os.environ.get("IGW_LOG_LEVEL", "info"))
    parser.add_argument(
        "--log-format", choices=("auto", "json", "text"), default=os.environ.get("IGW_LOG_FORMAT", "auto")
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("IGW_ACCESS_LOG", "false").lower() in {"1", "true", "yes", "on"},
        help="log one line per request (paths only: query strings can hold the verify token)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=float(os.environ.get("IGW_KEEPALIVE_TIMEOUT_SECONDS", "75")),
        help="seconds an idle connection, or one still sending its request headers, stays open "
        "(keep it above a load balancer's idle timeout; lower it when exposed directly)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("IGW_WORKERS", "1")),
        help="gateway processes sharing the port (SO_REUSEPORT), one Kafka producer each; SIGHUP restarts them in turn",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def use_uvloop() -> None:
    """uvloop when installed: measured faster for this server (bench/)."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = GatewaySettings.from_env()  # validated here too, so a bad setting fails once, not per worker
    if args.workers < 1:
        raise SettingsError("IGW_WORKERS", f"must be at least 1, got {args.workers}")
    if args.workers > 1 and not args.worker:
        log.info("igw gateway %s: %d workers on %s:%s", __version__, args.workers, args.host, args.port)
        argv = ["gateway", "--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
        argv += ["--log-format", args.log_format, "--access-log" if args.access_log else "--no-access-log"]
        argv += ["--keepalive-timeout", str(args.keepalive_timeout)]
        return Supervisor(argv, args.workers, settings.shutdown_timeout).run()
    log.info(
        "igw gateway %s starting on %s:%s", __version__, args.host, args.port, extra={"settings": settings.describe()}
    )
    use_uvloop()
    asyncio.run(
        serve(
            create_app(settings),
            host=args.host,
            port=args.port,
            reuse_port=args.worker,
            shutdown_timeout=settings.shutdown_timeout,
            access_log=args.access_log,
            keepalive_timeout=args.keepalive_timeout,
            ready_marker=os.environ.get("PROMETHEUS_MULTIPROC_DIR") if args.worker else None,
        )
    )
    log.info("igw gateway stopped")
    return 0


# How long a stopping gateway keeps connections it already accepted before closing the idle ones:
# a client that connected just before the listener closed gets to send its request.
SHUTDOWN_LINGER_SECONDS = 0.5


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    shutdown_timeout: float,
    access_log: bool,
    keepalive_timeout: float = 75.0,
    ready_marker: str | None,
) -> None:
    """Run until SIGTERM/SIGINT, then stop in the order that loses no request.

    1. Stop listening (other workers or replicas take new connections).
    2. Linger briefly: connections accepted a moment ago deliver their requests.
    3. aiohttp's cleanup: close idle connections, let in-flight requests finish within
       ``shutdown_timeout``, then the cleanup contexts (the producer flushes what they sent).
    """
    # Malformed requests: a throttled line each, without aiohttp's traceback or the request line.
    quiet_server_log()
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # The access-log hook also records request metrics, so it is always on; lines only on request.
        access_log=logging.getLogger("gateway.access"),
        access_log_class=RedactedAccessLogger if access_log else ObservingAccessLogger,
        handler_cancellation=False,
        # Hash the bytes as received: a decompressed body is not what Meta signed.
        auto_decompress=False,
        # aiohttp arms this timer when a connection opens and after each response, not per byte, so
        # it also closes connections that trickle their headers (slowloris). Trickled bodies are
        # cut by IGW_BODY_READ_TIMEOUT_SECONDS in the handler.
        keepalive_timeout=keepalive_timeout,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        log.info("igw gateway listening on %s:%s", host, port)
        tune_after_startup()
        mark_ready(ready_marker)
        await stop.wait()
        log.info("stopping: no new connections; finishing requests in flight")
        await site.stop()
        await asyncio.sleep(SHUTDOWN_LINGER_SECONDS)
    finally:
        await runner.cleanup()
