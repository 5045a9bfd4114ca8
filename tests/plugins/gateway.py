"""The gateway app on a test server: with the suite's real broker, or with records kept in memory.

``gateway_client`` (tests marked ``kafka``) publishes to the session's broker; ``memory_gateway_client``
is the same app from the same factory with a :class:`MemoryPublisher`, for the broker-free tier.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.access_log import access_logger_for
from gateway.app import create_app
from gateway.settings import DEFAULT_WEBHOOK_PATH, GatewaySettings
from gateway.signature import sign
from gateway.typedefs import state_key
from igw.config import KafkaSettings, Secret
from igw.errors import BrokerUnavailable, PublishError
from igw.records import OutRecord

APP_SECRET = "my_app_secret"
VERIFY_TOKEN = "test-verify-token-8c1f"
WEBHOOK = DEFAULT_WEBHOOK_PATH

GatewayClient = TestClient[Any, Any]


def suite_gateway_settings(kafka: KafkaSettings, **overrides: Any) -> GatewaySettings:
    """The suite's gateway settings: its secrets, a 1 MiB body limit, no spool."""
    return GatewaySettings(
        verify_token=Secret(VERIFY_TOKEN),
        app_secrets=(Secret(APP_SECRET),),
        kafka=kafka,
        max_body_bytes=1024 * 1024,
        **overrides,
    )


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[GatewayClient]:
    """``app`` on a loopback test server, run with the same server options as ``igw gateway``."""
    server = TestServer(app)
    # Runner options go to start_server(): TestServer's own keyword arguments are not passed on.
    await server.start_server(
        auto_decompress=False, access_log_class=access_logger_for(app[state_key].metrics, lines=True)
    )
    client: GatewayClient = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def gateway_settings(kafka_settings: KafkaSettings) -> GatewaySettings:
    return suite_gateway_settings(kafka_settings)


@pytest.fixture
async def gateway_client(gateway_settings: GatewaySettings) -> AsyncIterator[GatewayClient]:
    """The real app publishing to the session's broker."""
    async with serving(create_app(gateway_settings)) as client:
        yield client


@dataclass
class MemoryPublisher:
    """A ``gateway.publisher.Publisher`` that keeps what it is given: the gateway without Kafka.

    Acknowledges every publish at once while ``connected`` and no ``failure`` is set; otherwise it
    raises as the real publishers do, so the handler's answers can be driven from a test.
    """

    records: list[OutRecord] = field(default_factory=list)
    connected: bool = True
    failure: PublishError | None = None
    missing: set[str] = field(default_factory=set)  # topics missing_topics() reports
    running: bool = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        self._raise_if_down()
        if self.failure is not None:
            raise self.failure
        self.records.extend(records)

    async def missing_topics(self, topics: Sequence[str], timeout: float) -> list[str]:
        self._raise_if_down()
        return [t for t in topics if t in self.missing]

    async def settle(self, timeout: float) -> bool:
        return True

    def _raise_if_down(self) -> None:
        if not self.connected:
            raise BrokerUnavailable("the Kafka producer is not connected")


@pytest.fixture
def memory_publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
def memory_gateway_settings() -> GatewaySettings:
    """No broker behind these: topics are never created, and the spool is off."""
    return suite_gateway_settings(KafkaSettings(), create_topics=False)


@pytest.fixture
async def memory_gateway_client(
    memory_gateway_settings: GatewaySettings, memory_publisher: MemoryPublisher
) -> AsyncIterator[GatewayClient]:
    """The real app from ``create_app``, publishing to ``memory_publisher``."""
    app = create_app(memory_gateway_settings, publisher_factory=lambda _: memory_publisher)
    async with serving(app) as client:
        yield client


def metric(client: GatewayClient, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the metrics the app behind ``client`` serves on /metrics (0 when absent)."""
    app = client.app
    assert app is not None
    return app[state_key].metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def post_signed(
    client: GatewayClient, body: bytes, *, secret: str = APP_SECRET, path: str = WEBHOOK
) -> ClientResponse:
    """POST ``body`` the way Meta does: raw bytes with their ``X-Hub-Signature-256``."""
    # aiohttp's client warns about large raw bytes bodies; a BytesIO sends the same bytes.
    data: bytes | io.BytesIO = io.BytesIO(body) if len(body) > 1024 * 1024 else body
    return await client.post(
        path, data=data, headers={"X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json"}
    )


def meta_bytes(document: Any) -> bytes:
    """Serialize like Meta: ASCII only (``\\uXXXX`` escapes) and ``/`` written as ``\\/``."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def dm_body(
    text: str = "Hi! Are you open on Saturday? 😀",
    *,
    mid: str = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx",
    user: str = "1234567890123456",
    account: str = "17841400000000000",
    obj: str = "instagram",
    timestamp: int = 1764000000000,
) -> bytes:
    """One inbound DM, as Meta would send it."""
    return meta_bytes(
        {
            "object": obj,
            "entry": [
                {
                    "id": account,
                    "time": timestamp,
                    "messaging": [
                        {
                            "sender": {"id": user},
                            "recipient": {"id": account},
                            "timestamp": timestamp,
                            "message": {"mid": mid, "text": text},
                        }
                    ],
                }
            ],
        }
    )
