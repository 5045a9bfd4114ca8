"""Helpers for reconcile tests: a conversation history in the emulator, its webhooks, reconcile settings.

A test writes a history (``Message``s) into the Graph API emulator, delivers the webhooks of the
messages it chooses through the real gateway, then runs reconcile against the same broker.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from consumers.reconcile.settings import ReconcileSettings
from igw.config import KafkaSettings
from tests.plugins.gateway import meta_bytes

ONE_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation between ``account`` and ``user``."""

    account: str
    user: str
    mid: str
    timestamp: int
    text: str | None = "hello"
    outbound: bool = False
    platform: str = "instagram"

    def control(self) -> dict[str, Any]:
        """As ``POST /_emulator/conversations`` takes it."""
        return {
            "account_id": self.account,
            "user_id": self.user,
            "mid": self.mid,
            "text": self.text,
            "timestamp": self.timestamp,
            "direction": "outbound" if self.outbound else "inbound",
            "platform": self.platform,
        }

    def webhook(self) -> bytes:
        """The body Meta would POST for it (an echo for the account's own messages)."""
        sender, recipient = (self.account, self.user) if self.outbound else (self.user, self.account)
        message: dict[str, Any] = {"mid": self.mid, "text": self.text}
        if self.outbound:
            message["is_echo"] = True
        item = {
            "sender": {"id": sender},
            "recipient": {"id": recipient},
            "timestamp": self.timestamp,
            "message": message,
        }
        entry = {"id": self.account, "time": self.timestamp, "messaging": [item]}
        return meta_bytes({"object": "instagram" if self.platform == "instagram" else "page", "entry": [entry]})


async def record_history(base_url: str, messages: Iterable[Message]) -> None:
    """Write ``messages`` into the emulator's conversations (in chunks: one request each)."""
    batch = [m.control() for m in messages]
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(batch), 500):
            body = {"messages": batch[start : start + 500]}
            async with http.post(f"{base_url}/_emulator/conversations", json=body) as resp:
                assert resp.status == 200, await resp.text()


async def emulator_json(base_url: str, path: str, body: Any = None) -> Any:
    """GET (or POST ``body`` to) an emulator control endpoint."""
    async with aiohttp.ClientSession() as http:
        if body is None:
            async with http.get(f"{base_url}{path}") as resp:
                return await resp.json()
        async with http.post(f"{base_url}{path}", data=json.dumps(body)) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


def reconcile_settings(kafka: KafkaSettings, send_api: Any, **overrides: Any) -> ReconcileSettings:
    """Settings for one test: its broker and topics, the emulator, quick retries, no minimum age."""
    settings = ReconcileSettings(
        send_api=send_api,
        kafka=kafka,
        lookback_seconds=3600.0,
        min_age_seconds=0.0,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.5,
        timeout_seconds=5.0,
        pass_timeout_seconds=60.0,
        metrics_port=0,
        metrics_host="127.0.0.1",
    )
    return dataclasses.replace(settings, **overrides)


def reconcile_environ(kafka: KafkaSettings, emulator_url: str, accounts_file: str) -> dict[str, str]:
    """The same, as the environment ``igw reconcile`` reads."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "IGW_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_ENABLE_IDEMPOTENCE": "true" if kafka.enable_idempotence else "false",
        "IGW_TOPIC_PARTITIONS": str(kafka.partitions),
        "IGW_ACCOUNTS_FILE": accounts_file,
        "IGW_GRAPH_BASE_URL": emulator_url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator_url,
        "IGW_RECONCILE_LOOKBACK_SECONDS": "3600",
        "IGW_RECONCILE_MIN_AGE_SECONDS": "0",
        "IGW_RECONCILE_BACKOFF_BASE_SECONDS": "0.05",
        "IGW_RECONCILE_BACKOFF_MAX_SECONDS": "0.5",
        "IGW_LOG_FORMAT": "text",
    }
