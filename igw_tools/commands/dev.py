"""``igw dev``: the whole local stack in one terminal (the README's run command)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from consumers.agent_replies.settings import SAMPLE_RULES
from igw.config import Env, KafkaSettings
from igw.errors import ListenError
from igw_tools.devenv import DevSecrets, Ports, child_env, write_env_file
from igw_tools.devstack import Component, DevStack, busy_ports, python_igw
from igw_tools.localbroker import resolve_broker_binary


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dev",
        help="run the local stack: broker, gateway, agent, analytics, reconcile and the Graph API emulator",
        description="Development only. Starts a local Kafka-protocol broker (Tansu) and every igw process "
        "with prefixed logs; Ctrl-C (or SIGTERM, or closing the terminal) stops all of it. Secrets are generated "
        "once into <state-dir>/dev.env, with the settings a tool needs to reach the stack (source it).",
    )
    defaults = Ports()
    parser.add_argument("--port", type=int, default=defaults.gateway, help="gateway port (default 8080)")
    parser.add_argument("--emulator-port", type=int, default=defaults.emulator)
    parser.add_argument("--kafka-port", type=int, default=defaults.kafka)
    parser.add_argument("--agent-metrics-port", type=int, default=defaults.agent_metrics)
    parser.add_argument("--analytics-metrics-port", type=int, default=defaults.analytics_metrics)
    parser.add_argument("--reconcile-metrics-port", type=int, default=defaults.reconcile_metrics)
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
            "agent",
            python_igw("agent", "--metrics-port", str(ports.agent_metrics)),
            ports.agent_metrics,
            "/readyz",
            "joining its consumer group",
        ),
        Component(
            "analytics",
            python_igw("analytics", "--metrics-port", str(ports.analytics_metrics)),
            ports.analytics_metrics,
            "/readyz",
            "joining its consumer group",
        ),
        Component(
            "reconcile",
            python_igw("reconcile", "--metrics-port", str(ports.reconcile_metrics)),
            ports.reconcile_metrics,
            "/readyz",
            "reading what Kafka holds",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    base = dict(os.environ)
    resolve_broker_binary(base)  # a bad IGW_TANSU_BIN stops here, before anything is written or started
    ports = Ports(
        args.port,
        args.emulator_port,
        args.kafka_port,
        args.agent_metrics_port,
        args.analytics_metrics_port,
        args.reconcile_metrics_port,
    )
    busy = busy_ports(ports)
    if busy:
        ports_are = f"port {busy[0]} is" if len(busy) == 1 else f"ports {', '.join(busy)} are"
        raise ListenError(
            f"{ports_are} already in use",
            "stop what holds them, or choose others with those flags; with make: make run ARGS='--port 18080'",
        )
    kafka = KafkaSettings.from_env(Env(base))
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{ports.kafka}",
        topic_prefix=kafka.topic_prefix,
        enable_idempotence=False,
        partitions=3,
    )
    state_dir: Path = args.state_dir
    dev = DevSecrets.load_or_create(state_dir, base)
    state_dir.mkdir(parents=True, exist_ok=True)
    accounts = dev.accounts_file(state_dir)
    env = child_env(base, dev, kafka, ports, accounts, spool_dir=state_dir / "spool")
    env.setdefault("IGW_RULES_FILE", str(SAMPLE_RULES))  # the clinic sample, unless you name your own
    # A pass every 30 s; a message 10 s old that no webhook brought counts as dropped (igw simulate --drop).
    env.setdefault("IGW_RECONCILE_INTERVAL_SECONDS", "30")
    env.setdefault("IGW_RECONCILE_MIN_AGE_SECONDS", "10")
    env_file = state_dir / "dev.env"
    write_env_file(env_file, dev, env)
    url = f"http://127.0.0.1:{ports.gateway}/api/v1/instagram/webhook"
    igw = Path(sys.executable).with_name("igw")
    banner = [
        f"gateway    {url}",
        f"emulator   http://127.0.0.1:{ports.emulator}/_emulator/messages (what the agent sent)",
        f"metrics    gateway http://127.0.0.1:{ports.gateway}/metrics, agent http://127.0.0.1:{ports.agent_metrics}"
        f"/metrics, analytics http://127.0.0.1:{ports.analytics_metrics}/metrics, reconcile"
        f" http://127.0.0.1:{ports.reconcile_metrics}/metrics",
        f"agent      rules from {env['IGW_RULES_FILE']}",
        *dev.banner_lines(env_file),
        f"tools      source {env_file} (secrets, broker address, settings), then for example:",
        f"           {_shown_path(igw) if igw.exists() else 'igw'} simulate --event message --url {url}",
        f"           add --emulator http://127.0.0.1:{ports.emulator} --drop 0.1 --count 50: reconcile recovers"
        " the dropped ones (igw_reconcile_recovered_total)",
        "Ctrl-C stops everything",
    ]
    stack = DevStack(components(ports), kafka=kafka, env=env, state_dir=state_dir, ports=ports)
    try:
        return asyncio.run(stack.run(banner))
    except RuntimeError as exc:
        print(f"igw dev: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (.venv/bin/igw), else absolute."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
