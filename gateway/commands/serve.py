"""``igw gateway``: run the webhook gateway."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.app import create_app
from gateway.logs import RedactedAccessLogger, configure_logging
from gateway.settings import GatewaySettings

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
    settings = GatewaySettings.from_env()
    log.info(
        "igw gateway %s starting on %s:%s", __version__, args.host, args.port, extra={"settings": settings.describe()}
    )
    use_uvloop()
    web.run_app(
        create_app(settings),
        host=args.host,
        port=args.port,
        shutdown_timeout=settings.shutdown_timeout,
        access_log=logging.getLogger("gateway.access") if args.access_log else None,
        access_log_class=RedactedAccessLogger,
        print=None,
        handler_cancellation=False,
        # Hash the bytes as received: a decompressed body is not what Meta signed.
        auto_decompress=False,
    )
    log.info("igw gateway stopped")
    return 0
