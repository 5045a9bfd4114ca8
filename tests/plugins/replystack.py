"""The agent's whole local stack for fault tests: DMs in as signed webhooks, replies out to the emulator.

The real gateway (in this process, on a free loopback port) publishes to the suite's broker; the
Graph API emulator posts Meta's echo of every message it accepts back to that gateway as a signed
webhook, so the agent reads echoes from Kafka as it would in production; the agent runs as a real
process (``spawn``), free to be killed. Half the users write on Instagram (echoes matched by
text), half on Messenger (echoes carry the Send API's metadata).

Named to load after the agent, gateway, graph_emulator and kafka plugins, whose helpers it imports.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signature import sign
from igw.config import KafkaSettings, Secret
from igw_tools.graph_emulator import EmulatorConfig, InjectedFailure
from tests.plugins.agent import AgentProcess, Emulator, create_topics, spawn_agent_process, write_accounts_file
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, WEBHOOK, dm_body
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, TEST_ACCOUNTS, StartEmulator

# What the fault tests ask of the agent: fast enough to see, bounded so that faults land mid-stream.
STACK_AGENT_ENV = {
    "IGW_AGENT_CONCURRENCY": "32",
    "IGW_AGENT_MAX_IN_FLIGHT": "200",
    "IGW_AGENT_ECHO_WAIT_SECONDS": "8",
    "IGW_AGENT_STORE_TIMEOUT_SECONDS": "1",
    "IGW_LOG_FORMAT": "text",
}


@dataclass
class ReplyStack:
    kafka: KafkaSettings
    emulator: Emulator
    gateway_url: str
    tmp_path: Path
    session: aiohttp.ClientSession
    agents: list[AgentProcess] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)

    @staticmethod
    def user(n: int) -> tuple[str, bool]:
        """User number ``n``: its id, and whether it writes on Messenger (odd numbers) or Instagram."""
        return f"7{n:015d}", n % 2 == 1

    async def post_dm(self, n: int) -> None:
        """One signed DM from user ``n`` through the gateway (retried until the gateway takes it, as Meta does)."""
        user, messenger = self.user(n)
        account = MESSENGER_ACCOUNT if messenger else IG_ACCOUNT
        body = dm_body(
            "hello",
            mid=f"m.{self.kafka.topic_prefix}.{n}",
            user=user,
            account=account.account_id,
            obj="page" if messenger else "instagram",
            timestamp=int(time.time() * 1000),
        )
        headers = {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"}
        for _ in range(50):
            async with self.session.post(self.gateway_url + WEBHOOK, data=body, headers=headers) as response:
                if response.status == 200:
                    self.posted.append(user)
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the gateway kept refusing the DM of user {n}")

    async def stream(self, first: int, count: int, seconds: float) -> None:
        """``count`` DMs from users ``first``.. spread evenly over ``seconds``."""
        started = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i * seconds / count - time.monotonic()))
            await self.post_dm(first + i)

    def slow_sends(self, seconds: float, count: int = 100_000, *, accepted_first: bool = False) -> None:
        """Every send takes this long at the emulator (``accepted_first``: it is taken at once, its answer is slow)."""
        self.emulator.state.inject(InjectedFailure(count=count, delay_seconds=seconds, delay_answer=accepted_first))

    def replies(self) -> Counter[str]:
        return Counter(sent.recipient_id for sent in self.emulator.replies())

    async def wait_answered(self, users: set[str], timeout: float, settle: float = 2.0) -> Counter[str]:
        """Until every one of ``users`` has a reply (or ``timeout``), then ``settle`` more seconds for late extras."""
        deadline = time.monotonic() + timeout
        while not users <= set(self.replies()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle)
        return self.replies()

    async def spawn(self, extra: Mapping[str, str] | None = None, *, ready: bool = True) -> AgentProcess:
        log_path = self.tmp_path / f"agent-{len(self.agents)}.log"
        agent = await spawn_agent_process(
            self.kafka, self.emulator, log_path, {**STACK_AGENT_ENV, **(extra or {})}, ready=ready
        )
        self.agents.append(agent)
        return agent


@pytest.fixture
async def reply_stack(
    kafka_settings: KafkaSettings,
    start_graph_emulator: StartEmulator,
    aiohttp_server: Callable[..., Any],
    tmp_path: Path,
) -> AsyncIterator[ReplyStack]:
    """Gateway, emulator posting echoes to it, topics; ``reply_stack.spawn(env)`` starts agents (killed afterwards)."""
    await create_topics(kafka_settings)
    gateway_settings = GatewaySettings(
        verify_token=Secret(VERIFY_TOKEN), app_secrets=(Secret(APP_SECRET),), kafka=kafka_settings
    )
    gateway: TestServer = await aiohttp_server(create_app(gateway_settings), host="127.0.0.1")
    gateway_url = str(gateway.make_url("")).rstrip("/")
    running = await start_graph_emulator(
        EmulatorConfig(
            accounts=TEST_ACCOUNTS,
            enforce_window=False,
            ig_rate_per_second=100_000,
            page_rate_per_second=100_000,
            max_records=100_000,
            echo_webhook_url=gateway_url + WEBHOOK,
            echo_app_secret=Secret(APP_SECRET),
        )
    )
    accounts_file = write_accounts_file(tmp_path / "accounts.json")
    emulator = Emulator(running.base_url, running.state, accounts_file)
    async with aiohttp.ClientSession() as session:
        stack = ReplyStack(kafka_settings, emulator, gateway_url, tmp_path, session)
        try:
            yield stack
        finally:
            for agent in stack.agents:
                if agent.process.returncode is None:
                    agent.process.kill()
                    await agent.process.wait()


async def ledger_steps(redis_url: str, prefix: str) -> Counter[str]:
    """How many ledger entries are at each step (``sending``: a part handed to Meta, not known answered)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        steps: Counter[str] = Counter()
        async for key in client.scan_iter(match=f"{prefix}ledger:*", count=1000):
            step = await client.hget(key, "s")
            steps[step.decode() if step else "?"] += 1
        return steps
    finally:
        await client.aclose()


async def metric(agent: AgentProcess, name: str) -> dict[str, float]:
    """The samples of ``name`` on the agent's /metrics, by their label text."""
    async with aiohttp.ClientSession() as session, session.get(f"{agent.metrics_url}/metrics") as response:
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            samples[head[len(name) :]] = float(value)
    return samples
