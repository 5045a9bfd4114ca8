"""HTTP handlers: Meta's verification handshake, webhook deliveries, health and readiness."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Final

import orjson
from aiohttp import web

from gateway import bodies
from gateway.bodies import BIG_BODY_BYTES, SLICE_EVENTS
from gateway.content import seal_normalized
from gateway.delivery import KAFKA_UNAVAILABLE, DeliveryState, Mode
from gateway.kafka_health import check_kafka
from gateway.lograte import Throttle
from gateway.signature import SignatureVerdict
from gateway.state import GatewayState, KafkaChecked
from gateway.typedefs import publisher_key, settings_key, state_key
from igw.errors import KeyStoreUnavailable, PublishError, PublishTimeout, SpoolError
from igw.logs import bind_request_id
from igw.normalize import Normalized, normalize
from igw.records import OutRecord, build_records

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Hub-Signature-256"
# Meta's own samples answer this; any 200 body is accepted.
_RECEIVED: Final = b"EVENT_RECEIVED"
# The challenge echo is attacker-chosen text: no browser may take it for anything but text.
_CHALLENGE_HEADERS: Final = {"X-Content-Type-Options": "nosniff"}
# Unauthenticated junk is worth one warning now and then, not one per request (gateway.lograte).
_refused_handshakes = Throttle(log)
_refused_signatures = Throttle(log)
_key_store_failures = Throttle(log)


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
        _refused_handshakes.warning(
            "webhook verification refused: missing or wrong hub.mode / hub.challenge / hub.verify_token"
        )
        return web.Response(status=403, text="verification failed", content_type="text/plain")
    expected = request.app[settings_key].verify_token.value
    if not hmac.compare_digest(token.encode(), expected.encode()):
        _refused_handshakes.warning(
            "webhook verification refused: hub.verify_token does not match INSTAGRAM_WEBHOOK_VERIFY_TOKEN; "
            "check the token typed in Meta's App Dashboard"
        )
        return web.Response(status=403, text="verification failed", content_type="text/plain")
    log.info("webhook subscription verified by Meta")
    # Byte for byte: a JSON-quoted echo fails Meta's check.
    return web.Response(text=challenge, content_type="text/plain", headers=_CHALLENGE_HEADERS)


async def receive_webhook(request: web.Request) -> web.Response:
    """A signed delivery: verify, then store it where the delivery state says; 200 only once it is durable."""
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
    verdict = (
        state.verifier.verify(body, signature)
        if len(body) <= BIG_BODY_BYTES
        else await state.big.verify(state.verifier, body, signature)
    )
    if verdict is not SignatureVerdict.OK:
        state.metrics.signature_failures.labels(verdict.value).inc()
        _refused_signatures.warning(
            "webhook refused: signature %s; check INSTAGRAM_APP_SECRET against the app that sends it", verdict.value
        )
        return error_response(403, "invalid_signature", f"X-Hub-Signature-256 {verdict.value}")

    received_at = time.time_ns() // 1_000_000
    state.metrics.payload_bytes.observe(len(body))
    mode = state.delivery.state.mode
    if mode is Mode.DIRECT or mode is Mode.BYPASSING:
        return await _publish(request, state, body, received_at, signature)
    if mode is Mode.REFUSING:
        return _refused(state.delivery.state)
    # Spooling, or draining: spooled bodies are waiting, this one queues behind them.
    return await _spool_body(request, state, body, received_at, signature)


async def _publish(
    request: web.Request,
    state: GatewayState,
    body: bytes,
    received_at: int,
    signature: str | None,
    *,
    may_spool: bool = True,
) -> web.Response:
    """Publish to Kafka and answer 200 once it acknowledged; spool the body instead if it does not in time."""
    settings = request.app[settings_key]
    delivery = state.delivery
    spool = delivery.spool
    # A spool that takes bodies catches a slow publish after spool_after; without one, wait the full deadline.
    timeout = settings.spool_after if spool is not None and spool.fault() is None else settings.publish_timeout
    if len(body) > BIG_BODY_BYTES:
        big = state.big
        started = time.monotonic()
        async with big.turn(len(body)):
            normalized = await big.normalize(body, received_at)
            if state.sealer is not None:
                try:
                    normalized = await seal_normalized(state.sealer, normalized)
                except KeyStoreUnavailable as exc:
                    return await _unsealed(request, state, body, received_at, signature, exc, may_spool)
            records = await big.records(normalized, state.topics, body, received_at, signature)
            # Thousands of records take longer than one DM: what is left of the full deadline, so that
            # a big body is not spooled (and published twice) for its size alone.
            timeout = max(timeout, settings.publish_timeout - (time.monotonic() - started))
            return await _publish_records(
                request, state, normalized, records, body, received_at, signature, timeout, may_spool
            )
    normalized = normalize(body, received_at)
    if state.sealer is not None:
        try:
            normalized = await seal_normalized(state.sealer, normalized)
        except KeyStoreUnavailable as exc:
            return await _unsealed(request, state, body, received_at, signature, exc, may_spool)
    # The same function builds a spooled body's records when it is drained: identical output.
    records = build_records(normalized, state.topics, body, received_at, signature)
    return await _publish_records(request, state, normalized, records, body, received_at, signature, timeout, may_spool)


async def _unsealed(
    request: web.Request,
    state: GatewayState,
    body: bytes,
    received_at: int,
    signature: str | None,
    exc: KeyStoreUnavailable,
    may_spool: bool,
) -> web.Response:
    """The content key store did not answer: the body is spooled (the drain seals it later) or refused."""
    _key_store_failures.warning("webhook not published yet: %s", exc)
    if may_spool and state.delivery.spool is not None:
        return await _spool_body(request, state, body, received_at, signature, may_publish=False)
    return error_response(503, "key_store_unavailable", "content key store not answering; retry", retry_after=1)


async def _publish_records(
    request: web.Request,
    state: GatewayState,
    normalized: Normalized,
    records: list[OutRecord],
    body: bytes,
    received_at: int,
    signature: str | None,
    timeout: float,
    may_spool: bool,
) -> web.Response:
    dead = normalized.dead_letter
    if dead is not None:
        log.warning("signed body kept on the dead-letter topic: %s (%s)", dead.reason, dead.detail)
    delivery = state.delivery
    started = time.perf_counter()
    publisher = request.app[publisher_key]
    try:
        if len(records) <= SLICE_EVENTS:  # the usual body: no slicing frame on the hot path
            await publisher.publish(records, timeout)
        else:
            await bodies.publish(publisher, records, timeout)
    except PublishError as exc:
        state.metrics.broker_errors.labels("timeout" if isinstance(exc, PublishTimeout) else "unavailable").inc()
        log.debug("Kafka did not acknowledge a webhook: %s", exc)
        delivery.kafka_failed()
        if may_spool and delivery.state.mode is Mode.SPOOLING:
            return await _spool_body(request, state, body, received_at, signature, may_publish=False)
        return _refused(delivery.state)
    state.metrics.observe_published(normalized.events, time.perf_counter() - started)
    if dead is not None:
        state.metrics.dead_letters.labels(dead.reason).inc()
    return web.Response(body=_RECEIVED, content_type="text/plain")


async def _spool_body(
    request: web.Request,
    state: GatewayState,
    body: bytes,
    received_at: int,
    signature: str | None,
    *,
    may_publish: bool = True,
) -> web.Response:
    """Answer 200 once the body is fsynced to the spool; when the spool cannot take it, publish it
    directly if Kafka takes records (order traded, nothing refused), else 503."""
    delivery = state.delivery
    spool = delivery.spool
    if spool is None:
        return _refused(delivery.state)
    try:
        await spool.append(body, received_at, signature)
    except SpoolError:
        # The spool reported its fault to the delivery state already.
        if may_publish and delivery.state.mode is Mode.BYPASSING:
            return await _publish(request, state, body, received_at, signature, may_spool=False)
        return _refused(delivery.state)
    return web.Response(body=_RECEIVED, content_type="text/plain")


def _refused(state: DeliveryState) -> web.Response:
    if state.reason == KAFKA_UNAVAILABLE:
        return error_response(503, "broker_unavailable", "events not stored yet; retry", retry_after=1)
    return error_response(503, "spool_unavailable", f"events not stored yet ({state.reason}); retry", retry_after=1)


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving; says nothing about Kafka (that is /readyz)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready exactly while a webhook would be taken: in every delivery mode but ``refusing``
    (docs/durability.md). The body says the mode, its reason and what Kafka and the spool report."""
    app = request.app
    settings = app[settings_key]
    state = app[state_key]
    delivery = state.delivery
    checked = state.kafka_checked
    now = time.monotonic()
    if checked is None or now - checked.checked_at >= settings.ready_cache_seconds:
        ok, checks = await check_kafka(app[publisher_key], settings, state.metrics)
        checked = state.kafka_checked = KafkaChecked(ok, checks, now)
        # A check is evidence like a publish: it moves the delivery state too.
        if ok:
            delivery.kafka_recovered()
        else:
            delivery.kafka_failed()
    checks = dict(checked.checks)
    if settings.spool_dir is not None:
        checks["spool"] = _spool_check(state)
    current = delivery.state
    body = {
        "status": "ready" if delivery.ready else "not_ready",
        "mode": current.mode.value,
        "reason": current.reason,
        "checks": checks,
    }
    return web.json_response(body, status=200 if delivery.ready else 503)


def _spool_check(state: GatewayState) -> str:
    delivery = state.delivery
    spool = delivery.spool
    if spool is None:
        return f"unavailable ({delivery.spool_open_fault or 'opening'})"
    fault = spool.fault()
    waiting = spool.records
    text = "accepting" if fault is None else f"refusing ({fault})"
    if delivery.drain_fault is not None:
        text += f", drain failing ({delivery.drain_fault})"
    return text + (f", {waiting} bodies waiting for Kafka" if waiting else "")
