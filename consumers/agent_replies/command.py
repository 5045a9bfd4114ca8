"""``igw agent``: run the agent-replies consumer."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiokafka.errors import KafkaConnectionError

from consumers.agent_replies.settings import AgentSettings
from consumers.common.runner import run_consumer
from igw.config import LOG_FORMATS, LOG_LEVELS, Env, LogSettings
from igw.logs import configure_logging
from igw.preflight import METRICS_LISTEN, check_kafka, check_listen, kafka_unreachable

__all__ = ["register", "run"]

_DESCRIPTION = (
    "Consume inbound messages and postbacks from Kafka and answer them through Meta's Send API with the "
    "agent IGW_AGENT names (rules, http or openai). Settings come from the environment (docs/agent.md); "
    "each flag wins over its variable."
)


def register(subparsers: Any) -> None:
    # No defaults from the environment here: they are read when the command runs (LogSettings).
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="answer inbound messages through the Send API", description=_DESCRIPTION
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port for /metrics, /healthz, /readyz (IGW_METRICS_PORT, 9101)"
    )
    parser.add_argument(
        "--metrics-host", default=None, help="address for the metrics server (IGW_METRICS_HOST, 0.0.0.0)"
    )
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="IGW_LOG_LEVEL, default info")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="IGW_LOG_FORMAT, default auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Settings (the rules file and the accounts included), the metrics port, then Kafka, and only
    # then logging: a start that cannot succeed ends with one line (igw_tools.cli).
    logs = LogSettings.from_env(Env(), level=args.log_level, fmt=args.log_format)
    settings = AgentSettings.from_env(metrics_host=args.metrics_host, metrics_port=args.metrics_port)
    consumer = settings.consumer
    check_listen(consumer.metrics_host, consumer.metrics_port, settings=METRICS_LISTEN)

    async def main(stop: asyncio.Event, started: asyncio.Event) -> int:
        from consumers.agent_replies.service import run_agent

        await check_kafka(consumer.kafka)
        configure_logging(logs.level, logs.format)
        try:
            await run_agent(settings, stop, started=started)
        except KafkaConnectionError:
            # Kafka went away between the check and the start; aiokafka raises this only while connecting.
            raise kafka_unreachable(consumer.kafka) from None
        return 0

    return run_consumer(main)
