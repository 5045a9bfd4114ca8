"""The gateway app on a test server, talking to the suite's real broker."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.access_log import access_logger_for
from gateway.app import create_app
from gateway.settings import DEFAULT_WEBHOOK_PATH, GatewaySettings
from gateway.signature import sign
from gateway.typedefs import state_key
from igw.config import KafkaSettings, Secret

APP_SECRET = "my_app_secret"
VERIFY_TOKEN = "test-verify-token-8c1f"
WEBHOOK = DEFAULT_WEBHOOK_PATH

GatewayClient = TestClient[Any, Any]


@pytest.fixture
def gateway_settings(kafka_settings: KafkaSettings) -> GatewaySettings:
    return GatewaySettings(
        verify_token=Secret(VERIFY_TOKEN),
        app_secrets=(Secret(APP_SECRET),),
        kafka=kafka_settings,
        max_body_bytes=1024 * 1024,
    )


@pytest.fixture
async def gateway_client(gateway_settings: GatewaySettings) -> AsyncIterator[GatewayClient]:
    """The real app on a loopback test server, run with the same server options as ``igw gateway``."""
    app = create_app(gateway_settings)
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
