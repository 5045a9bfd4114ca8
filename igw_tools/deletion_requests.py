"""Carrying out Meta's data deletion requests (``igw erase --requests``).

The gateway's callback stores each request (status ``received``) and publishes it to the erasures
topic. Meta names the person by an app-scoped id (ASID), which no DM carries. Where Meta allows it
is mapped: on Messenger, ``GET /{asid}/ids_for_pages?page=<page id>`` with the app access token gives
the person's page-scoped id on each of the business's Pages, and each is erased. Instagram has no such
mapping: the status page says so, and the business erases by the person's Instagram id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.send_api.client import appsecret_proof
from consumers.send_api.model import AccountConfig, Flavour
from igw.config import KafkaSettings
from igw.envelope import ERASURE_REQUEST, Topic
from igw.keystore import KeyStore
from igw.topics import end_offsets
from igw_tools.erase import Erasure, erase

__all__ = ["RequestOutcome", "pending_requests", "process_requests"]

log = logging.getLogger(__name__)

INSTAGRAM_NOTE = (
    "Instagram: Meta gives no way to match the app-scoped id of this request to an Instagram user id;"
    " conversations on Instagram were not erased by this request (the business can erase them by id)"
)


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    code: str
    status: str
    erased: tuple[str, ...]
    reason: str | None


async def pending_requests(kafka: KafkaSettings, keys: KeyStore, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Deletion requests on the erasures topic whose stored status is still ``received``."""
    topic = kafka.topic(Topic.ERASURES)
    consumer = AIOKafkaConsumer(client_id=f"{kafka.client_id}-erase", group_id=None, **kafka.client_kwargs())
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await end_offsets(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=300)
            for tp, records in batch.items():
                for record in records:
                    document = _document(record.value)
                    if document is not None:
                        found.append(document)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    pending = []
    for document in found:
        stored = await keys.get_request(document["id"])
        status = orjson.loads(stored).get("status") if stored is not None else "received"
        if status == "received":
            pending.append(document)
    return pending


def _document(value: bytes | None) -> dict[str, Any] | None:
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if (
        isinstance(document, dict)
        and document.get("type") == ERASURE_REQUEST
        and document.get("kind") == "data_deletion"
        and isinstance(document.get("id"), str)
        and isinstance(document.get("app_user_id"), str)
    ):
        return document
    return None


async def _page_ids(
    session: aiohttp.ClientSession, graph_url: str, app_id: str, app_secret: str, asid: str, page_id: str
) -> list[str]:
    token = f"{app_id}|{app_secret}"
    params = {"page": page_id, "access_token": token, "appsecret_proof": appsecret_proof(token, app_secret)}
    async with session.get(f"{graph_url}/{asid}/ids_for_pages", params=params) as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise RuntimeError(f"Graph API error {error.get('code', response.status)} for ids_for_pages")
    return [str(item["id"]) for item in body.get("data", ()) if isinstance(item, dict) and "id" in item]


async def process_requests(
    kafka: KafkaSettings,
    keys: KeyStore,
    accounts: Sequence[AccountConfig],
    *,
    graph_url: str,
    app_id: str | None,
    app_secret: str | None,
    timeout: float = 15.0,
) -> list[RequestOutcome]:
    """Map and erase every pending request; each request's status document says what was done."""
    outcomes: list[RequestOutcome] = []
    pages = [a for a in accounts if a.flavour in (Flavour.MESSENGER,)]
    has_instagram = any(a.flavour is not Flavour.MESSENGER for a in accounts)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        for request in await pending_requests(kafka, keys, timeout):
            asid = request["app_user_id"]
            erased: list[str] = []
            reason: str | None = None
            if not pages:
                reason = "no Messenger Page is configured, and Meta maps app-scoped ids only to Page-scoped ids"
            elif not app_id or not app_secret:
                reason = "IGW_APP_ID and INSTAGRAM_APP_SECRET are needed to ask Meta for the Page-scoped ids"
            else:
                try:
                    for page in pages:
                        for psid in await _page_ids(session, graph_url, app_id, app_secret, asid, page.account_id):
                            await erase(kafka, keys, Erasure("messenger", page.account_id, psid, request["id"]))
                            erased.append(f"Messenger conversation with Page {page.account_id}")
                except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                    log.warning("deletion request %s: %s; left for the next run", request["id"], exc)
                    continue
                if not erased:
                    reason = "no conversation with the configured Pages: nothing was held about this person there"
            status = "refused" if not pages or not app_id or not app_secret else "done"
            document = {**request, "status": status, "erased": erased, "processed_at": int(time.time() * 1000)}
            notes = [reason] if reason else []
            if has_instagram:
                notes.append(INSTAGRAM_NOTE)
            if notes:
                document["reason"] = "; ".join(notes)
            await keys.put_request(request["id"], orjson.dumps(document))
            outcomes.append(RequestOutcome(request["id"], status, tuple(erased), document.get("reason")))
    return outcomes
