"""Meta's Data Deletion Request and Deauthorize callbacks, and the deletion status page.

Both callbacks carry a ``signed_request``. A verified one is published to ``<prefix>.erasures``
(acknowledged by Kafka before the answer, like a webhook) and, for a deletion, answered with the
status page's URL and a confirmation code, as Meta requires. The user id Meta sends is app-scoped,
not the id a DM carries: ``igw erase --requests`` maps it where Meta allows and erases (docs/privacy.md).
Anything unsigned, forged, expired or malformed gets 400/403 and nothing is done.
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from typing import Any, Final

import orjson
from aiohttp import web

from gateway.signed_request import SignedRequestError, SignedRequestRefused, parse_signed_request
from gateway.typedefs import publisher_key, settings_key, state_key
from igw.envelope import ENVELOPE_VERSION, ERASURE_REQUEST, Topic
from igw.errors import PublishError
from igw.records import OutRecord, cloudevent_headers

__all__ = ["data_deletion", "deauthorize", "deletion_status", "status_document"]

log = logging.getLogger(__name__)

# Meta's callbacks are small forms; anything bigger is not one of them.
MAX_FORM_BYTES: Final = 16 * 1024
_STATUS: Final = {
    SignedRequestError.MISSING: 400,
    SignedRequestError.MALFORMED: 400,
    SignedRequestError.BAD_ALGORITHM: 400,
    SignedRequestError.EXPIRED: 400,
    SignedRequestError.BAD_SIGNATURE: 403,
}


async def _verified(request: web.Request, kind: str) -> tuple[Any, web.Response | None]:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return None, _refuse(request, kind, 413, "too_large")
    try:
        form = await request.post()
    except Exception:  # a body that is not a form: refused like any malformed request
        return None, _refuse(request, kind, 400, SignedRequestError.MALFORMED)
    value = form.get("signed_request")
    secrets_ = [s.value.encode() for s in request.app[settings_key].app_secrets]
    try:
        signed = parse_signed_request(value if isinstance(value, str) else None, secrets_, time.time())
    except SignedRequestRefused as exc:
        return None, _refuse(request, kind, _STATUS[exc.reason], exc.reason)
    return signed, None


def _refuse(request: web.Request, kind: str, status: int, reason: str) -> web.Response:
    request.app[state_key].metrics.privacy_callbacks.labels(kind, reason).inc()
    log.warning("%s callback refused: %s", kind, reason)
    return web.json_response({"error": reason}, status=status)


def _request_record(topic: str, document: dict[str, Any], now_ms: int) -> OutRecord:
    headers = cloudevent_headers(document["id"], document["type"], "igw/gateway/privacy", now_ms)
    return OutRecord(topic, document["id"].encode(), orjson.dumps(document), headers)


async def _publish(request: web.Request, document: dict[str, Any], now_ms: int) -> None:
    app = request.app
    settings = app[settings_key]
    topic = settings.kafka.topic(Topic.ERASURES)
    await app[publisher_key].publish([_request_record(topic, document, now_ms)], settings.publish_timeout)


async def data_deletion(request: web.Request) -> web.Response:
    """Meta's Data Deletion Request callback: ``{"url", "confirmation_code"}`` once the request is stored."""
    signed, refused = await _verified(request, "data_deletion")
    if refused is not None:
        return refused
    settings = request.app[settings_key]
    state = request.app[state_key]
    now_ms = int(time.time() * 1000)
    code = secrets.token_urlsafe(12)
    document = {
        "v": ENVELOPE_VERSION,
        "id": code,
        "type": ERASURE_REQUEST,
        "kind": "data_deletion",
        "app_user_id": signed.user_id,
        "issued_at": signed.issued_at,
        "received_at": now_ms,
        "status": "received",
    }
    try:
        await _publish(request, document, now_ms)
    except PublishError as exc:
        log.error("data deletion request not stored (%s); answering 503 so Meta retries", exc)
        return web.json_response({"error": "unavailable"}, status=503, headers={"Retry-After": "1"})
    if state.sealer is not None:
        await state.sealer.store.put_request(code, orjson.dumps(document))
    else:
        state.deletion_requests[code] = orjson.dumps(document)
    state.metrics.privacy_callbacks.labels("data_deletion", "accepted").inc()
    log.info("data deletion request received; confirmation code %s", code)
    base = settings.public_url or f"{request.scheme}://{request.host}"
    return web.json_response(
        {"url": f"{base}{settings.privacy_path}/deletion-status?id={code}", "confirmation_code": code}
    )


async def deauthorize(request: web.Request) -> web.Response:
    """Meta's Deauthorize callback: the person removed the app. Recorded on the erasures topic; 200, empty."""
    signed, refused = await _verified(request, "deauthorize")
    if refused is not None:
        return refused
    now_ms = int(time.time() * 1000)
    document = {
        "v": ENVELOPE_VERSION,
        "id": secrets.token_urlsafe(12),
        "type": ERASURE_REQUEST,
        "kind": "deauthorize",
        "app_user_id": signed.user_id,
        "issued_at": signed.issued_at,
        "received_at": now_ms,
        "status": "received",
    }
    try:
        await _publish(request, document, now_ms)
    except PublishError as exc:
        log.error("deauthorize callback not stored (%s); answering 503 so Meta retries", exc)
        return web.json_response({"error": "unavailable"}, status=503, headers={"Retry-After": "1"})
    request.app[state_key].metrics.privacy_callbacks.labels("deauthorize", "accepted").inc()
    return web.Response(status=200)


async def status_document(request: web.Request, code: str) -> dict[str, Any] | None:
    state = request.app[state_key]
    raw = await state.sealer.store.get_request(code) if state.sealer is not None else state.deletion_requests.get(code)
    return orjson.loads(raw) if raw is not None else None


_MESSAGES: Final = {
    "received": "Your request was received. It is processed within 30 days; this page shows the outcome.",
    "done": "The data this service held about you has been erased.",
    "refused": "Your request could not be carried out automatically.",
}


async def deletion_status(request: web.Request) -> web.Response:
    """The page a deletion request's URL shows: what was erased, or why not. No personal data on it."""
    code = request.query.get("id", "")
    document = await status_document(request, code) if code.replace("-", "").replace("_", "").isalnum() else None
    if document is None:
        return web.Response(status=404, text="No deletion request with this code.", content_type="text/plain")
    status = str(document.get("status", "received"))
    lines = [_MESSAGES.get(status, status)]
    lines.extend(f"Erased: {item}" for item in document.get("erased", ()))
    if document.get("reason"):
        lines.append(f"Reason: {document['reason']}")
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Data deletion request</title></head><body>"
        f"<h1>Data deletion request {html.escape(code)}</h1><p>Status: {html.escape(status)}</p>{body}</body></html>"
    )
    return web.Response(text=page, content_type="text/html", headers={"X-Content-Type-Options": "nosniff"})
