"""``igw analytics``: the analytics consumer (business metrics on ``--metrics-port``, default 9102)."""

from __future__ import annotations

import argparse
import asyncio

from aiokafka.errors import KafkaConnectionError

from consumers.analytics.service import run_analytics
from consumers.analytics.settings import AnalyticsSettings
from consumers.common.runner import run_consumer
from igw.config import LOG_FORMATS, LOG_LEVELS, Env, LogSettings
from igw.logs import configure_logging
from igw.preflight import METRICS_LISTEN, check_kafka, check_listen, kafka_unreachable

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # No defaults from the environment here: they are read when the command runs (LogSettings).
    parser = subparsers.add_parser(
        "analytics",
        help="count business metrics from every igw topic",
        description="Consume every igw topic in its own group (IGW_ANALYTICS_GROUP) and serve igw_biz_* metrics."
        " Settings come from the environment (docs/configuration.md); each flag wins over its variable.",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="port for /metrics and /healthz (9102)")
    parser.add_argument("--metrics-host", default=None, help="address for the metrics server (0.0.0.0)")
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="IGW_LOG_LEVEL, default info")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="IGW_LOG_FORMAT, default auto")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Settings, the metrics port, then Kafka, and only then logging: a start that cannot succeed
    # ends with one line (igw_tools.cli).
    logs = LogSettings.from_env(Env(), level=args.log_level, fmt=args.log_format)
    settings = AnalyticsSettings.from_env(metrics_host=args.metrics_host, metrics_port=args.metrics_port)
    settings.check_rollup_path()
    consumer = settings.consumer
    check_listen(
        consumer.metrics_host,
        consumer.metrics_port,
        settings=METRICS_LISTEN,
    )

    async def run(stop: asyncio.Event, started: asyncio.Event) -> int:
        await check_kafka(consumer.kafka)
        configure_logging(logs.level, logs.format)
        try:
            return await run_analytics(settings, stop, started=started)
        except KafkaConnectionError:
            # Kafka went away between the check and the start; aiokafka raises this only while connecting.
            raise kafka_unreachable(consumer.kafka) from None

    return run_consumer(run)
