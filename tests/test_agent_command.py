"""``igw agent`` as a process: metrics and health on its port, a clean exit on SIGTERM, config errors exit 2."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from igw.config import KafkaSettings
from igw_tools.cli import build_parser
from igw_tools.graph_emulator import InjectedFailure
from tests.plugins.agent import Emulator, SpawnAgent, envelope, publish


@pytest.mark.kafka
async def test_process_serves_metrics_and_stops_on_sigterm(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, spawn_agent: SpawnAgent
) -> None:
    """The process answers a message, shows agent, lag and Send API metrics, and exits 0 on SIGTERM."""
    agent = await spawn_agent({"IGW_CONSUMER_LAG_INTERVAL_SECONDS": "0.2"})
    await publish(kafka_settings, [envelope("metrics-user", "hello")])
    await agent_emulator.wait_for(1)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{agent.metrics_url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{agent.metrics_url}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{agent.metrics_url}/metrics") as response:
            text = await response.text()
    assert 'igw_agent_replies_total{outcome="sent",reason="replied"} 1.0' in text
    assert "igw_agent_reply_latency_seconds_count 1.0" in text
    assert 'igw_agent_call_duration_seconds_count{agent="rules"} 1.0' in text
    assert f'igw_consumer_records_total{{group="agent-{kafka_settings.topic_prefix}"' in text
    assert "igw_consumer_lag_messages{" in text
    assert "igw_send_api_requests_total{" in text
    agent.process.send_signal(signal.SIGTERM)
    assert await agent.wait() == 0
    assert "finishing the work in hand" in agent.log()


def test_igw_cli_knows_the_agent_command() -> None:
    """``igw agent`` is registered and takes --metrics-port."""
    args = build_parser().parse_args(["agent", "--metrics-port", "9999"])
    assert args.metrics_port == 9999


def test_config_error_exits_2_naming_the_variable() -> None:
    """Without IGW_RULES_FILE the command exits 2 and says which variable to set."""
    result = subprocess.run(
        [sys.executable, "-m", "igw_tools.cli", "agent"],
        env={"PATH": "/usr/bin:/bin", "IGW_AGENT": "rules"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "IGW_RULES_FILE" in result.stderr


@pytest.mark.kafka
async def test_second_sigterm_stops_at_once(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, spawn_agent: SpawnAgent
) -> None:
    """A second SIGTERM while a slow send is in hand stops the process without waiting for it."""
    agent_emulator.state.inject(InjectedFailure(count=1, delay_seconds=30))
    agent = await spawn_agent({"IGW_SHUTDOWN_TIMEOUT_SECONDS": "60"})
    await publish(kafka_settings, [envelope("stuck", "hello")])
    deadline = time.monotonic() + 10
    while agent_emulator.state.failures[0].count != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    agent.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert agent.process.returncode is None  # still finishing the send in hand
    agent.process.send_signal(signal.SIGTERM)
    assert await agent.wait(timeout=10) == 1
    assert "without waiting for work in hand" in agent.log()
    assert "Traceback" not in agent.log()
