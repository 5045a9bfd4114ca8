"""Erasing one person: their content keys, and an erasure record every consumer acts on.

What happens, in order (docs/privacy.md):
1. With ``IGW_CONTENT_KEYS``, the person's keys are deleted: what Kafka holds of them can no longer
   be read, and a body of theirs from before now that arrives later is published without content.
2. An ``erasure`` record goes to ``<prefix>.erasures`` (acknowledged by Kafka): the agent drops the
   person's history and pauses, analytics its per-conversation state, your own consumers whatever
   they keep.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from igw.config import KafkaSettings
from igw.envelope import ENVELOPE_VERSION, ERASURE, Topic
from igw.keystore import KeyStore
from igw.records import cloudevent_headers
from igw.topics import ensure_topics

__all__ = ["Erasure", "ErasureReport", "erase", "erasure_document"]

PLATFORMS = ("instagram", "messenger")


@dataclass(frozen=True, slots=True)
class Erasure:
    platform: str
    account_id: str
    user_id: str
    requested_by: str = "igw erase"

    @property
    def conversation_id(self) -> str:
        return f"{self.platform}:{self.account_id}:{self.user_id}"


@dataclass(slots=True)
class ErasureReport:
    erasure: Erasure
    erased_at: int
    keys_deleted: int | None  # None: no key store configured
    record_id: str
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        e = self.erasure
        out = [f"erased {e.conversation_id} at {self.erased_at} (record {self.record_id} on the erasures topic)"]
        if self.keys_deleted is None:
            out.append(
                "content keys: none configured (IGW_CONTENT_KEYS unset): their messages stay readable in Kafka "
                "until retention removes them"
            )
        else:
            out.append(f"content keys: {self.keys_deleted} deleted; their messages in Kafka can no longer be read")
        out.extend(self.notes)
        return out


def erasure_document(erasure: Erasure, erased_at: int, keys_deleted: int | None) -> dict[str, Any]:
    return {
        "v": ENVELOPE_VERSION,
        "id": secrets.token_hex(16),
        "type": ERASURE,
        "platform": erasure.platform,
        "account_id": erasure.account_id,
        "user_id": erasure.user_id,
        "conversation_id": erasure.conversation_id,
        "erased_at": erased_at,
        "requested_by": erasure.requested_by,
        "keys_deleted": keys_deleted,
    }


async def erase(
    kafka: KafkaSettings, keys: KeyStore | None, erasure: Erasure, *, create_topics: bool = True
) -> ErasureReport:
    """Delete the person's keys, then publish the erasure record; returns what was done."""
    erased_at = int(time.time() * 1000)
    keys_deleted = await keys.erase(erasure.conversation_id, erased_at) if keys is not None else None
    document = erasure_document(erasure, erased_at, keys_deleted)
    if create_topics:
        await ensure_topics(kafka, (Topic.ERASURES,))
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        client_id=f"{kafka.client_id}-erase",
        acks="all",
        enable_idempotence=kafka.enable_idempotence,
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka.topic(Topic.ERASURES),
            orjson.dumps(document),
            key=erasure.conversation_id.encode(),
            headers=cloudevent_headers(document["id"], ERASURE, "igw/erase", erased_at, erasure.conversation_id),
        )
    finally:
        await producer.stop()
    return ErasureReport(erasure, erased_at, keys_deleted, document["id"])
