"""``igw dev``: the whole local stack in one terminal (the README's run command)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from consumers.agent_replies.settings import SAMPLE_RULES
from igw.config import Env, KafkaSettings
from igw_tools.devstack import (
    DEV_INSTAGRAM_ACCOUNT,
    Component,
    DevSecrets,
    DevStack,
    Ports,
    busy_ports,
    child_env,
    environ,
    python_igw,
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dev",
        help="run the local stack: broker, gateway, agent, analytics and the Graph API emulator",
        description="Development only. Starts a local Kafka-protocol broker (Tansu) and every igw process "
        "with prefixed logs; Ctrl-C stops all of it. Secrets are generated once into <state-dir>/dev.env.",
    )
    defaults = Ports()
    parser.add_argument("--port", type=int, default=defaults.gateway, help="gateway port (default 8080)")
    parser.add_argument("--emulator-port", type=int, default=defaults.emulator)
    parser.add_argument("--kafka-port", type=int, default=defaults.kafka)
    parser.add_argument("--agent-metrics-port", type=int, default=defaults.agent_metrics)
    parser.add_argument("--analytics-metrics-port", type=int, default=defaults.analytics_metrics)
    parser.add_argument("--state-dir", type=Path, default=Path(".igw"), help="where dev secrets and logs live")
    parser.set_defaults(func=run)


def components(ports: Ports) -> list[Component]:
    return [
        Component(
            "emulator",
            python_igw(
                "graph-emulator",
                *("--port", str(ports.emulator), "--inbound-grace", "3"),
                # Meta's echo of every reply, to the gateway: the agent confirms lost answers with them.
                *("--echo-webhook", f"http://127.0.0.1:{ports.gateway}/api/v1/instagram/webhook"),
            ),
            ports.emulator,
            "/healthz",
        ),
        Component("gateway", python_igw("gateway", "--port", str(ports.gateway)), ports.gateway, "/readyz"),
        Component(
            "agent", python_igw("agent", "--metrics-port", str(ports.agent_metrics)), ports.agent_metrics, "/readyz"
        ),
        Component(
            "analytics",
            python_igw("analytics", "--metrics-port", str(ports.analytics_metrics)),
            ports.analytics_metrics,
            "/readyz",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    ports = Ports(args.port, args.emulator_port, args.kafka_port, args.agent_metrics_port, args.analytics_metrics_port)
    busy = busy_ports(ports)
    if busy:
        print(f"igw dev: port {', '.join(busy)} is already in use; choose another with that flag", file=sys.stderr)  # noqa: T201
        return 2
    base = environ()
    kafka = KafkaSettings.from_env(Env(base))
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{ports.kafka}",
        topic_prefix=kafka.topic_prefix,
        enable_idempotence=False,
        partitions=3,
    )
    state_dir: Path = args.state_dir
    dev = DevSecrets.load_or_create(state_dir, base)
    accounts = dev.accounts_file(state_dir)
    env = child_env(base, dev, kafka, ports, accounts, spool_dir=state_dir / "spool")
    env.setdefault("IGW_RULES_FILE", str(SAMPLE_RULES))  # the clinic sample, unless you name your own
    # Tansu holds a group join for about half the rebalance timeout: keep it short on a laptop.
    env.setdefault("IGW_CONSUMER_MAX_POLL_INTERVAL_MS", "10000")
    url = f"http://127.0.0.1:{ports.gateway}/api/v1/instagram/webhook"
    banner = [
        f"gateway   {url}",
        f"emulator  http://127.0.0.1:{ports.emulator}/_emulator/messages (what the agent sent)",
        f"metrics   gateway http://127.0.0.1:{ports.gateway}/metrics, agent http://127.0.0.1:{ports.agent_metrics}"
        f"/metrics, analytics http://127.0.0.1:{ports.analytics_metrics}/metrics",
        f"agent     rules from {env['IGW_RULES_FILE']}",
        f"verify token {dev.verify_token}   app secret {dev.app_secret}   (saved in {state_dir / 'dev.env'})",
        f"try: source {state_dir / 'dev.env'} && igw simulate --event message --account-id {DEV_INSTAGRAM_ACCOUNT}",
        "Ctrl-C stops everything",
    ]
    stack = DevStack(
        components(ports),
        kafka=kafka,
        env=env,
        state_dir=state_dir,
        ports=ports,
    )
    try:
        return asyncio.run(stack.run(banner))
    except RuntimeError as exc:
        print(f"igw dev: {exc}", file=sys.stderr)  # noqa: T201
        return 1
