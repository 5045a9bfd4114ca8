"""Fixtures for the agent consumer: a Graph API emulator, settings, envelopes and a running consumer.

Everything is real: the session's Kafka-protocol broker, Redis at 127.0.0.1:6379 (a key prefix per
test) and the Graph API emulator on a free 127.0.0.1 port. Tests publish envelopes shaped per
docs/events.md to ``<prefix>.messages`` themselves and count what reaches the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from consumers.agent_replies.agent import Agent
from consumers.agent_replies.service import run_agent
from consumers.agent_replies.settings import SAMPLE_RULES, AgentSettings
from consumers.agent_replies.store import Store
from igw.config import KafkaSettings
from igw.topics import ensure_topics
from igw_tools.graph_emulator import AcceptedSend, EmulatorConfig, EmulatorState

if TYPE_CHECKING:
    from tests.plugins.graph_emulator import StartEmulator

# The Instagram-Login account of tests/plugins/graph_emulator.py (imported lazily: pytest loads that
# plugin after this one and must import it first to rewrite its asserts).
ACCOUNT = "17841400000000001"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


@dataclass
class Emulator:
    url: str
    state: EmulatorState
    accounts_file: Path

    def replies(self, kind: str = "message") -> list[AcceptedSend]:
        return [sent for sent in self.state.messages if sent.kind == kind]

    def replies_to(self, user_id: str) -> list[AcceptedSend]:
        return [sent for sent in self.replies() if sent.recipient_id == user_id]

    async def wait_for(self, count: int, timeout: float = 15.0, settle: float = 0.0) -> list[AcceptedSend]:
        """Wait until ``count`` messages arrived (then ``settle`` more seconds, to catch extras)."""
        deadline = time.monotonic() + timeout
        # Polling: the emulator's state has no event to wait on, and the loop is bounded by the deadline.
        while len(self.replies()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if settle:
            await asyncio.sleep(settle)
        return self.replies()


def write_accounts_file(path: Path) -> Path:
    """The three test accounts (tests/plugins/graph_emulator.py) in IGW_ACCOUNTS_FILE's format."""
    from tests.plugins.graph_emulator import TEST_ACCOUNTS

    path.write_bytes(
        orjson.dumps(
            [
                {
                    "account_id": a.account_id,
                    "flavour": str(a.flavour),
                    "token": a.token.value,
                    **({"app_secret": a.app_secret.value} if a.app_secret else {}),
                }
                for a in TEST_ACCOUNTS
            ]
        )
    )
    return path


@pytest.fixture
async def agent_emulator(start_graph_emulator: StartEmulator, tmp_path: Path) -> Emulator:
    """The Graph API emulator with the three test accounts; the window rule here is the consumer's own."""
    from tests.plugins.graph_emulator import IG_ACCOUNT, TEST_ACCOUNTS

    assert IG_ACCOUNT.account_id == ACCOUNT
    config = EmulatorConfig(
        accounts=TEST_ACCOUNTS, enforce_window=False, ig_rate_per_second=100_000, page_rate_per_second=100_000
    )
    running = await start_graph_emulator(config)
    accounts_file = write_accounts_file(tmp_path / "accounts.json")
    return Emulator(running.base_url, running.state, accounts_file)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards.

    Synchronous, so that a fixture running in the event loop can ask for it at run time.
    """
    import redis

    prefix = f"igwtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def agent_store_environ(request: pytest.FixtureRequest) -> dict[str, str]:
    """The agent's store each way: in process (no variables), and in Redis under a prefix of this test's own."""
    if request.param == "memory":
        return {}
    return {"REDIS_URL": REDIS_URL, "IGW_AGENT_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}


def agent_environ(kafka: KafkaSettings, emulator: Emulator, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for ``AgentSettings.from_env``: this test's broker and topics, the emulator, fast timings."""
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "IGW_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_ENABLE_IDEMPOTENCE": "true" if kafka.enable_idempotence else "false",
        "IGW_TOPIC_PARTITIONS": str(kafka.partitions),
        "IGW_AGENT_GROUP": f"agent-{kafka.topic_prefix}",
        "IGW_ACCOUNTS_FILE": str(emulator.accounts_file),
        "IGW_GRAPH_BASE_URL": emulator.url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator.url,
        "IGW_SEND_BACKOFF_BASE_SECONDS": "0.01",
        "IGW_SEND_BACKOFF_MAX_SECONDS": "0.05",
        "IGW_SEND_MAX_ATTEMPTS": "2",
        "IGW_RULES_FILE": str(SAMPLE_RULES),
        "IGW_CONSUMER_POLL_TIMEOUT_MS": "100",
        "IGW_CONSUMER_COMMIT_INTERVAL_SECONDS": "0.2",
        "IGW_CONSUMER_HEARTBEAT_MS": "300",
        "IGW_CONSUMER_SESSION_TIMEOUT_MS": "2000",
        # The emulator's own rate limit is not what these tests are about.
        "IGW_SEND_RATE_IG": "100000",
        "IGW_SEND_RATE_PAGE": "100000",
        "IGW_AGENT_RETRY_BASE_SECONDS": "0.05",
        "IGW_AGENT_RETRY_MAX_SECONDS": "0.2",
        "IGW_SHUTDOWN_TIMEOUT_SECONDS": "5",
        "IGW_METRICS_PORT": "0",
    }
    environ.update(extra or {})
    return environ


def event_id(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


def envelope(
    user_id: str,
    text: str | None = "hello",
    *,
    account_id: str = ACCOUNT,
    mid: str | None = None,
    type: str = "message",
    timestamp_ms: int | None = None,
    payload: str | None = None,
    app_id: str | None = None,
    standby: bool = False,
    platform: str = "instagram",
) -> dict[str, Any]:
    """An envelope v1 (docs/events.md) for an inbound message, a postback or an echo."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    mid = mid or f"mid.{uuid.uuid4().hex}"
    echo = type == "message_echo"
    sender, recipient = (account_id, user_id) if echo else (user_id, account_id)
    body: dict[str, Any] = {
        "v": 1,
        "id": event_id(type, mid),
        "type": type,
        "platform": platform,
        "account_id": account_id,
        "user_id": user_id,
        "sender_id": sender,
        "recipient_id": recipient,
        "conversation_id": f"{platform}:{account_id}:{user_id}",
        "timestamp": ts,
        "received_at": ts + 5,
        "standby": standby,
    }
    raw_item: dict[str, Any] = {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": ts}
    if type == "postback":
        body["postback"] = {"mid": mid, "title": text, "payload": payload, "referral": None}
        raw_item["postback"] = {"mid": mid, "title": text, "payload": payload}
    else:
        body["message"] = {
            "mid": mid,
            "text": text,
            "attachments": [],
            "quick_reply_payload": payload,
            "reply_to": None,
            "referral": None,
            "is_unsupported": False,
            "app_id": app_id,
            "metadata": None,
        }
        raw_item["message"] = {"mid": mid, "text": text, **({"is_echo": True} if echo else {})}
    body["raw"] = raw_item
    return body


async def publish(kafka: KafkaSettings, envelopes: list[dict[str, Any]], topic: str = "messages") -> None:
    """Publish envelopes as the gateway does: keyed by conversation, to ``<prefix>.<topic>``."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False, linger_ms=5, acks="all"
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                kafka.topic("postbacks" if env["type"] == "postback" and topic == "messages" else topic),
                orjson.dumps(env),
                key=str(env.get("conversation_id") or env["account_id"]).encode(),
                headers=[("ce_id", env["id"].encode()), ("content-type", b"application/json")],
            )
            for env in envelopes
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def create_topics(kafka: KafkaSettings) -> None:
    await ensure_topics(kafka, ("messages", "postbacks", "replies", "deadletter", "erasures"))


@dataclass
class RunningAgent:
    settings: AgentSettings
    stop: asyncio.Event
    task: asyncio.Task[None]
    registry: CollectorRegistry

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample of what this agent's /metrics would serve (0 when absent)."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 20)

    async def crash(self) -> None:
        """Cancel the consumer task: like a crash as far as Kafka and the ledger are concerned."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


StartAgent = Callable[..., Awaitable[RunningAgent]]


@pytest.fixture
async def start_agent(kafka_settings: KafkaSettings, agent_emulator: Emulator) -> AsyncIterator[StartAgent]:
    """``await start_agent({"ENV": "value"}, agent=..., store=...)``: a consumer task, joined to its group."""
    await create_topics(kafka_settings)
    running: list[RunningAgent] = []

    async def start(
        extra: Mapping[str, str] | None = None, *, agent: Agent | None = None, store: Store | None = None
    ) -> RunningAgent:
        settings = AgentSettings.from_env(agent_environ(kafka_settings, agent_emulator, extra))
        stop, started = asyncio.Event(), asyncio.Event()
        registry = CollectorRegistry()
        task = asyncio.create_task(
            run_agent(settings, stop, agent=agent, store=store, serve_http=False, started=started, registry=registry)
        )
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raise what went wrong
        assert started.is_set(), "the agent consumer did not join its group in time"
        handle = RunningAgent(settings, stop, task, registry)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if not handle.task.done():
            await handle.shutdown()


def rules_path(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class AgentProcess:
    """``python -m consumers.agent_replies`` (what ``igw agent`` runs) as a child process."""

    process: asyncio.subprocess.Process
    metrics_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise AssertionError(f"igw agent exited with {self.process.returncode}:\n{self.log()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.metrics_url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise AssertionError(f"igw agent not ready within {timeout} s:\n{self.log()}")

    async def wait(self, timeout: float = 20.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)


SpawnAgent = Callable[..., Awaitable[AgentProcess]]


async def spawn_agent_process(
    kafka: KafkaSettings,
    emulator: Emulator,
    log_path: Path,
    extra: Mapping[str, str] | None = None,
    *,
    ready: bool = True,
) -> AgentProcess:
    """``python -m igw_tools.cli agent`` against ``emulator``, metrics on a free port; waits until it is ready."""
    import sys

    from igw_tools.localbroker import free_port

    port = free_port()
    environ = {**os.environ, **agent_environ(kafka, emulator, extra), "IGW_METRICS_PORT": str(port)}
    environ["IGW_METRICS_HOST"] = "127.0.0.1"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "igw_tools.cli", "agent", env=environ, stdout=log_file, stderr=log_file
        )
    handle = AgentProcess(process, f"http://127.0.0.1:{port}", log_path)
    if ready:
        try:
            await handle.wait_ready()
        except BaseException:
            process.kill()
            await process.wait()
            raise
    return handle


@pytest.fixture
async def spawn_agent(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, tmp_path: Path
) -> AsyncIterator[SpawnAgent]:
    """``await spawn_agent({"ENV": "value"})``: the agent consumer as a real process, ready (group joined)."""
    await create_topics(kafka_settings)
    processes: list[AgentProcess] = []

    async def spawn(extra: Mapping[str, str] | None = None) -> AgentProcess:
        log_path = tmp_path / f"agent-{len(processes)}.log"
        handle = await spawn_agent_process(kafka_settings, agent_emulator, log_path, extra)
        processes.append(handle)
        return handle

    yield spawn
    for handle in processes:
        if handle.process.returncode is None:
            handle.process.kill()
            await handle.process.wait()
