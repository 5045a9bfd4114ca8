"""``igw agent``: run the agent-replies consumer."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from typing import Any

from consumers.agent_replies.settings import AgentSettings
from consumers.common.runner import run_consumer
from igw.logs import configure_logging

__all__ = ["register", "run"]

_DESCRIPTION = (
    "Consume inbound messages and postbacks from Kafka and answer them through Meta's Send API with the "
    "agent IGW_AGENT names (rules, http or openai). Settings come from the environment (docs/agent.md)."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "agent", help="answer inbound messages through the Send API", description=_DESCRIPTION
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port for /metrics, /healthz, /readyz (default 9101)"
    )
    parser.add_argument("--log-level", default=os.environ.get("IGW_LOG_LEVEL", "info"), help="logging level")
    parser.add_argument(
        "--log-format", choices=("auto", "json", "text"), default=os.environ.get("IGW_LOG_FORMAT", "auto")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = AgentSettings.from_env()
    if args.metrics_port is not None:
        settings = dataclasses.replace(
            settings, consumer=dataclasses.replace(settings.consumer, metrics_port=args.metrics_port)
        )

    async def main(stop: asyncio.Event, started: asyncio.Event) -> int:
        from consumers.agent_replies.service import run_agent

        await run_agent(settings, stop, started=started)
        return 0

    return run_consumer(main)
