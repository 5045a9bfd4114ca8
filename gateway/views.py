"""HTTP handlers: Meta's verification handshake, webhook deliveries, health and readiness."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Final

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.content import seal_normalized
from gateway.kafka_health import check_kafka
from gateway.signature import SignatureVerdict
from gateway.spool import Spool
from gateway.state import GatewayState, Readiness
from gateway.typedefs import publisher_key, settings_key, state_key
from igw.errors import KeyStoreUnavailable, PublishError, PublishTimeout, SpoolError
from igw.logs import bind_request_id
from igw.normalize import normalize
from igw.records import build_records

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
# Meta's own samples answer this; any 200 body is accepted.
_RECEIVED: Final = b"EVENT_RECEIVED"
# Cheaper than content_type= (no parsing), measured ~1 µs a response.
_TEXT: Final = CIMultiDictProxy(CIMultiDict({"Content-Type": "text/plain"}))


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    """A stable ``{"error": code, "message": ...}`` body; ``code`` is for machines, ``message`` for people."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        status=status,
        body=orjson.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


async def verify_subscription(request: web.Request) -> web.Response:
    """Meta's GET handshake: echo ``hub.challenge`` as plain text when the token matches."""
    bind_request_id(request)
    query = request.query
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token")
    challenge = query.get("hub.challenge")
    if mode != "subscribe" or not challenge or token is None:
        log.warning("webhook verification refused: missing or wrong hub.mode / hub.challenge / hub.verify_token")
        return web.Response(status=403, text="verification failed", content_type="text/plain")
    expected = request.app[settings_key].verify_token.value
    if not hmac.compare_digest(token.encode(), expected.encode()):
        log.warning(
            "webhook verification refused: hub.verify_token does not match INSTAGRAM_WEBHOOK_VERIFY_TOKEN; "
            "check the token typed in Meta's App Dashboard"
        )
        return web.Response(status=403, text="verification failed", content_type="text/plain")
    log.info("webhook subscription verified by Meta")
    # Byte for byte: a JSON-quoted echo fails Meta's check.
    return web.Response(text=challenge, content_type="text/plain")


async def receive_webhook(request: web.Request) -> web.Response:
    """A signed delivery: verify, normalize, publish, and say 200 only once Kafka acknowledged."""
    bind_request_id(request)
    app = request.app
    settings = app[settings_key]
    state = app[state_key]

    encoding = request.headers.get("Content-Encoding")
    if encoding and encoding.lower() != "identity":
        # Meta signs the bytes it sends uncompressed; decompressing here would also invite bombs.
        return error_response(415, "unsupported_encoding", "Content-Encoding is not supported")
    length = request.content_length
    if length is not None and length > settings.max_body_bytes:
        response = error_response(413, "body_too_large", f"body over {settings.max_body_bytes} bytes")
        response.force_close()  # do not read the rest of it
        return response
    try:
        content = request.content
        if length is not None and content.is_eof():
            # The whole body came with the headers (the usual case) and its declared length was
            # checked above: take it without read()'s chunk loop.
            body = content.read_nowait()
        else:
            # A body trickled in (slowloris) must not hold a handler and a connection for long.
            async with asyncio.timeout(settings.body_read_timeout):
                body = await request.read()
    except TimeoutError:
        response = error_response(408, "body_timeout", f"body not received within {settings.body_read_timeout:g}s")
        response.force_close()
        return response
    except web.HTTPRequestEntityTooLarge:
        response = error_response(413, "body_too_large", f"body over {settings.max_body_bytes} bytes")
        response.force_close()
        return response

    signature = request.headers.get(SIGNATURE_HEADER)
    verdict = state.verifier.verify(body, signature)
    if verdict is not SignatureVerdict.OK:
        state.metrics.signature_failures.labels(verdict.value).inc()
        log.warning(
            "webhook refused: signature %s; check INSTAGRAM_APP_SECRET against the app that sends it", verdict.value
        )
        return error_response(403, "invalid_signature", f"X-Hub-Signature-256 {verdict.value}")

    received_at = time.time_ns() // 1_000_000
    state.metrics.payload_bytes.observe(len(body))
    spool = state.spool
    if state.spooling and spool is not None:
        # Spooled bodies are waiting: this one queues behind them instead of overtaking them.
        return await _spool_body(state, spool, body, received_at, signature)
    normalized = normalize(body, received_at)
    sealer = state.sealer
    if sealer is not None:
        try:
            normalized = await seal_normalized(sealer, normalized)
        except KeyStoreUnavailable as exc:
            if spool is not None:
                return await _spool_body(state, spool, body, received_at, signature)
            log.error("webhook not published: %s; answering 503 so Meta retries", exc)
            return error_response(503, "key_store_unavailable", "content key store not answering; retry", retry_after=1)
    # The same function builds a spooled body's records when it is drained: identical output.
    records = build_records(normalized, state.topics, body, received_at, signature)
    dead = normalized.dead_letter
    if dead is not None:
        log.warning("signed body kept on the dead-letter topic: %s (%s)", dead.reason, dead.detail)

    # While Kafka is failing, one request at a time (the probe) gets the full deadline so recovery
    # is noticed; the others fail fast instead of each holding a connection for the full deadline.
    probe = state.degraded and not state.probe_in_flight
    timeout = settings.degraded_publish_timeout if state.degraded and not probe else settings.publish_timeout
    if spool is not None:
        timeout = settings.spool_after
    if probe:
        state.probe_in_flight = True
    started = time.perf_counter()
    try:
        await request.app[publisher_key].publish(records, timeout)
    except PublishError as exc:
        kind = "timeout" if isinstance(exc, PublishTimeout) else "unavailable"
        state.metrics.broker_errors.labels(kind).inc()
        if spool is not None:
            if not state.spooling:
                log.warning("Kafka did not acknowledge a webhook (%s); spooling signed bodies until it does", exc)
            return await _spool_body(state, spool, body, received_at, signature)
        if not state.degraded:
            log.error("Kafka did not acknowledge a webhook (%s); answering 503 so Meta retries", exc)
        state.degraded = True
        return error_response(503, "broker_unavailable", "events not stored yet; retry", retry_after=1)
    finally:
        if probe:
            state.probe_in_flight = False
    if state.degraded:
        log.info("Kafka acknowledges again")
        state.degraded = False
    state.metrics.observe_published(normalized.events, time.perf_counter() - started)
    if dead is not None:
        state.metrics.dead_letters.labels(dead.reason).inc()
    return web.Response(body=_RECEIVED, headers=_TEXT)


async def _spool_body(
    state: GatewayState, spool: Spool, body: bytes, received_at: int, signature: str | None
) -> web.Response:
    """Answer 200 once the body is fsynced to the spool; 503 when the spool cannot take it."""
    try:
        written = spool.append(body, received_at, signature)
        state.spooling = True
        await written
    except SpoolError as exc:
        if spool.records == 0:
            state.spooling = False  # nothing waits in the spool: let the next request try Kafka again
        if state.spool_refusal != exc.reason:
            state.spool_refusal = exc.reason
            log.error("spool refused a body (%s: %s); answering 503 so Meta retries", exc.reason, exc)
        return error_response(503, "spool_unavailable", "events not stored yet; retry", retry_after=1)
    if state.spool_refusal is not None:
        state.spool_refusal = None
        log.info("spool takes bodies again")
    return web.Response(body=_RECEIVED, headers=_TEXT)


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving; says nothing about Kafka (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Kafka takes records (producer connected, topics present) or, with the spool on, while
    the spool accepts them: webhooks are then stored durably either way (docs/durability.md)."""
    app = request.app
    settings = app[settings_key]
    state = app[state_key]
    cached = state.readiness
    now = time.monotonic()
    if cached is None or now - cached.checked_at >= settings.ready_cache_seconds:
        cached = state.readiness = await _check_readiness(request.app, now)
    body = {"status": "ready" if cached.ready else "not_ready", "checks": cached.checks}
    return web.json_response(body, status=200 if cached.ready else 503)


async def _check_readiness(app: web.Application, now: float) -> Readiness:
    state = app[state_key]
    ready, checks = await check_kafka(app[publisher_key], app[settings_key], state.metrics)
    spool = state.spool
    if spool is not None:
        accepting = spool.accepting()
        waiting = spool.records
        checks["spool"] = ("accepting" if accepting else "refusing") + (
            f", {waiting} bodies waiting for Kafka" if waiting else ""
        )
        # With room in the spool, webhooks are taken durably even while Kafka is away (docs/durability.md).
        ready = ready or accepting
    return Readiness(ready, checks, now)
