"""``igw gateway``: run the webhook gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from aiohttp import web

from gateway.access_log import access_logger_for
from gateway.app import create_app
from gateway.garbage import tune_after_startup
from gateway.settings import GatewaySettings, ServeSettings
from gateway.typedefs import state_key
from gateway.workers import Supervisor, mark_ready
from igw import __version__
from igw.config import LOG_FORMATS, LOG_LEVELS, Env, LogSettings
from igw.logs import configure_logging
from igw.preflight import GATEWAY_LISTEN, check_listen, listen_error

# HTTP parser limits. Meta's requests carry a dozen short headers; the handshake's query string
# (token + challenge) is short. Over these, aiohttp answers 400 or 431 and closes the connection,
# so a hostile client holds at most max_headers * max_field_size bytes of buffer per connection.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64

log = logging.getLogger("gateway")


def register(subparsers: Any) -> None:
    # No defaults from the environment here: a bad variable must not break other commands or
    # --help. Each flag wins over its variable (ServeSettings, LogSettings), read when this runs.
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway",
        help="run the webhook gateway (Meta -> Kafka)",
        description="Serve Meta's webhook: verify, normalize and publish every event to Kafka. "
        "Settings come from the environment (docs/configuration.md); each flag wins over its variable.",
    )
    parser.add_argument("--host", help="address to listen on (IGW_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, help="port to listen on (IGW_PORT, default 8080)")
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="IGW_LOG_LEVEL, default info")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="IGW_LOG_FORMAT, default auto")
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log one line per request (paths only: query strings can hold the verify token); IGW_ACCESS_LOG",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        help="seconds an idle connection, or one still sending its request headers, stays open "
        "(keep it above a load balancer's idle timeout; lower it when exposed directly); "
        "IGW_KEEPALIVE_TIMEOUT_SECONDS, default 75",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="gateway processes sharing the port (SO_REUSEPORT), one Kafka producer each; SIGHUP restarts them "
        "in turn (IGW_WORKERS, default 1)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def use_uvloop() -> None:
    """uvloop when installed: measured faster for this server (bench/)."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def run(args: argparse.Namespace) -> int:
    # Every setting first, then the checks, then logging: a start that cannot succeed ends with
    # one line (igw_tools.cli) and nothing half started. Kafka is not checked: the gateway starts
    # without it and spools (docs/durability.md).
    env = Env()
    logs = LogSettings.from_env(env, level=args.log_level, fmt=args.log_format)
    serve_settings = ServeSettings.from_env(
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        keepalive_timeout=args.keepalive_timeout,
    )
    settings = GatewaySettings.from_env()  # validated here too, so a bad setting fails once, not per worker
    host, port = serve_settings.host, serve_settings.port
    supervise = serve_settings.workers > 1 and not args.worker
    settings.check_spool_dir()
    check_listen(host, port, reuse_port=supervise or args.worker, settings=GATEWAY_LISTEN)
    configure_logging(logs.level, logs.format)
    if supervise:
        log.info("igw gateway %s: %d workers on %s:%s", __version__, serve_settings.workers, host, port)
        argv = ["gateway", "--host", host, "--port", str(port), "--log-level", logs.level]
        argv += ["--log-format", logs.format, "--access-log" if serve_settings.access_log else "--no-access-log"]
        argv += ["--keepalive-timeout", str(serve_settings.keepalive_timeout)]
        metrics_dir = str(serve_settings.metrics_dir) if serve_settings.metrics_dir is not None else None
        return Supervisor(argv, serve_settings.workers, settings.shutdown_timeout, metrics_dir=metrics_dir).run()
    log.info("igw gateway %s starting on %s:%s", __version__, host, port, extra={"settings": settings.describe()})
    use_uvloop()
    asyncio.run(
        serve(
            create_app(settings),
            host=host,
            port=port,
            reuse_port=args.worker,
            shutdown_timeout=settings.shutdown_timeout,
            access_log=serve_settings.access_log,
            keepalive_timeout=serve_settings.keepalive_timeout,
            ready_marker=str(serve_settings.metrics_dir) if args.worker and serve_settings.metrics_dir else None,
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
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        # The access-log hook also records request metrics, so it is always on; lines only on request.
        access_log=logging.getLogger("gateway.access"),
        access_log_class=access_logger_for(app[state_key].metrics, lines=access_log),
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
        try:
            await site.start()
        except OSError as exc:  # taken since check_listen: another process was quicker
            raise listen_error(host, port, exc, GATEWAY_LISTEN) from None
        log.info("igw gateway listening on %s:%s", host, port)
        tune_after_startup()
        mark_ready(ready_marker)
        await stop.wait()
        log.info("stopping: no new connections; finishing requests in flight")
        await site.stop()
        await asyncio.sleep(SHUTDOWN_LINGER_SECONDS)
    finally:
        await runner.cleanup()
