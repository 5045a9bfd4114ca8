"""``igw analytics``: the analytics consumer (business metrics on ``--metrics-port``, default 9102)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os

from consumers.analytics.service import run_analytics
from consumers.analytics.settings import AnalyticsSettings
from consumers.common.runner import run_consumer
from igw.logs import configure_logging

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "analytics",
        help="count business metrics from every igw topic",
        description="Consume every igw topic in its own group (IGW_ANALYTICS_GROUP) and serve igw_biz_* metrics.",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="port for /metrics and /healthz (9102)")
    parser.add_argument("--metrics-host", default=None, help="address for the metrics server (0.0.0.0)")
    parser.add_argument("--log-level", default=os.environ.get("IGW_LOG_LEVEL", "info"))
    parser.add_argument(
        "--log-format", choices=("auto", "json", "text"), default=os.environ.get("IGW_LOG_FORMAT", "auto")
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = AnalyticsSettings.from_env()
    consumer = settings.consumer
    if args.metrics_port is not None:
        consumer = dataclasses.replace(consumer, metrics_port=args.metrics_port)
    if args.metrics_host is not None:
        consumer = dataclasses.replace(consumer, metrics_host=args.metrics_host)
    settings = dataclasses.replace(settings, consumer=consumer)

    async def run(stop: asyncio.Event, started: asyncio.Event) -> int:
        return await run_analytics(settings, stop, started=started)

    return run_consumer(run)
