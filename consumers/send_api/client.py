"""The Send API client: replies to Instagram and Messenger users through Meta's Graph API.

One :class:`SendApiClient` per process holds one ``aiohttp.ClientSession``, the accounts it may
send from and a per-account rate limiter. Every call has a timeout; retriable failures
(transient errors, rate limits) are retried with exponential backoff and jitter, within a bounded
number of attempts and a bounded time; every other failure raises :class:`SendError` at once.
Tokens travel only in the request; they never reach a log line, an exception or a metric.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry
from yarl import URL

from consumers.common.children import Children
from consumers.send_api.errors import ErrorClass, SendError, classify, code_label
from consumers.send_api.metrics import SendApiMetrics
from consumers.send_api.model import AccountConfig, Flavour, OutboundMessage, QuickReply, SendResult
from consumers.send_api.ratelimit import (
    BusinessUsage,
    LocalRateLimiter,
    RateLimiter,
    RateLimitExceeded,
    RedisRateLimiter,
    parse_business_usage,
)
from consumers.send_api.settings import SendApiSettings
from consumers.send_api.text import split_text

__all__ = [
    "MAX_METADATA",
    "MAX_QUICK_REPLIES",
    "MAX_QUICK_REPLY_TITLE",
    "SENDER_ACTIONS",
    "AccountConfig",
    "Flavour",
    "OutboundMessage",
    "QuickReply",
    "SendApiClient",
    "SendError",
    "SendResult",
    "appsecret_proof",
    "split_text",
]

logger = logging.getLogger(__name__)

MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
# Messenger's limit for the metadata it passes back in the echo.
MAX_METADATA = 1000
SENDER_ACTIONS = frozenset({"typing_on", "typing_off", "mark_seen"})
_MAX_META_MESSAGE = 500


def appsecret_proof(token: str, app_secret: str) -> str:
    """HMAC-SHA256 of the access token keyed with the app secret, as lowercase hex."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def _scrub(text: str, *secrets: str) -> str:
    # Meta echoes a malformed token in some messages; never let one through.
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:_MAX_META_MESSAGE]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _may_have_arrived(exc: BaseException) -> bool:
    """Whether Meta may have received (and accepted) a request that failed with ``exc``.

    Only a failure to connect proves the request never left; a timeout or a connection lost
    mid-call leaves it open.
    """
    return not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _retry_after_header(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class SendApiClient:
    """Sends messages and sender actions for the configured accounts (see module docstring)."""

    def __init__(
        self,
        settings: SendApiSettings,
        *,
        accounts: Iterable[AccountConfig] | None = None,
        limiter: RateLimiter | None = None,
        session: aiohttp.ClientSession | None = None,
        jitter: Callable[[], float] = random.random,
        metrics: SendApiMetrics | None = None,
    ) -> None:
        """``metrics``: where the process that uses the client counts its calls (the agent passes the
        ones its /metrics serves); without it the client keeps them in a registry of its own."""
        self._settings = settings
        self.metrics = metrics if metrics is not None else SendApiMetrics(CollectorRegistry())
        self._accounts = {account.account_id: account for account in (accounts or settings.accounts)}
        self._limiter = limiter
        self._owns_limiter = limiter is None
        self._session = session
        self._owns_session = session is None
        self._jitter = jitter
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        # Per account: the URL (parsed once), query parameters and headers of every call from it.
        self._requests: dict[str, tuple[URL, dict[str, str], dict[str, str]]] = {}
        self._requests_total = Children(self.metrics.requests)
        # Meta's usage header is the same from call to call while usage does not change.
        self._usage: tuple[str, BusinessUsage] | None = None
        self._durations = Children(self.metrics.duration)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        if self._limiter is None:
            if self._settings.redis_url:
                self._limiter = RedisRateLimiter.from_url(
                    self._settings.redis_url, prefix=self._settings.rate_limit_key_prefix
                )
            else:
                self._limiter = LocalRateLimiter()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_limiter and self._limiter is not None:
            await self._limiter.close()
            self._limiter = None

    async def __aenter__(self) -> SendApiClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def account(self, account_id: str) -> AccountConfig:
        """The configured account; a lone ``me`` account answers to any id (the one-token setup)."""
        account = self._accounts.get(account_id)
        if account is None and len(self._accounts) == 1 and "me" in self._accounts:
            account = self._accounts["me"]
        if account is None:
            raise SendError(ErrorClass.UNKNOWN, meta_message=f"no account {account_id!r} is configured", attempts=0)
        return account

    def parts(self, account_id: str, message: OutboundMessage) -> list[OutboundMessage]:
        """``message`` split into the messages Meta takes from this account's flavour, quick replies on the last.

        Each part is for :meth:`send_once`; :meth:`send` sends them all in order.
        """
        account = self.account(account_id)
        texts = split_text(message.text or "", account.flavour)
        if not texts:
            raise SendError(ErrorClass.INVALID_MESSAGE, meta_message="the message has no text", attempts=0)
        if len(texts) == 1 and texts[0] == message.text:
            return [message]  # the usual case: one part, the message itself
        last = len(texts) - 1
        return [
            dataclasses.replace(message, text=text, quick_replies=message.quick_replies if index == last else ())
            for index, text in enumerate(texts)
        ]

    async def send(self, account_id: str, message: OutboundMessage) -> list[SendResult]:
        """Send ``message``, split into parts that fit the flavour's limit; one result per part.

        Each part is retried as the settings say (``IGW_SEND_MAX_ATTEMPTS``). A caller that keeps
        its own record of what was sent (the agent) uses :meth:`parts` and :meth:`send_once`.
        """
        results: list[SendResult] = []
        for part in self.parts(account_id, message):
            try:
                results.append(await self._send_part(account_id, part, self._settings.max_attempts))
            except SendError as exc:
                exc.parts_sent = len(results)
                raise
        return results

    async def send_once(self, account_id: str, part: OutboundMessage) -> SendResult:
        """Send one part (from :meth:`parts`) with exactly one HTTP call, after the rate limiter allows it.

        No retry here: a failure raises :class:`SendError` at once, with ``ambiguous`` set when
        Meta may have accepted the message anyway. The caller owns the retries.
        """
        return await self._send_part(account_id, part, 1)

    async def _send_part(self, account_id: str, part: OutboundMessage, max_attempts: int) -> SendResult:
        account = self.account(account_id)
        if not part.text:
            raise SendError(ErrorClass.INVALID_MESSAGE, meta_message="the message has no text", attempts=0)
        content: dict[str, Any] = {"text": part.text}
        quick_replies = self._quick_replies(part.quick_replies)
        if quick_replies:
            content["quick_replies"] = quick_replies
        if part.metadata and account.flavour is Flavour.MESSENGER:
            content["metadata"] = part.metadata[:MAX_METADATA]
        body: dict[str, Any] = {"recipient": {"id": part.recipient_id}, "message": content}
        if part.tag:
            body["messaging_type"] = "MESSAGE_TAG"
            body["tag"] = part.tag
        elif account.flavour.uses_page_token:
            body["messaging_type"] = part.messaging_type
        answer, attempts = await self._call(account, body, max_attempts)
        return SendResult(
            message_id=str(answer.get("message_id", "")),
            recipient_id=str(answer.get("recipient_id", part.recipient_id)),
            attempts=attempts,
        )

    async def sender_action(self, account_id: str, recipient_id: str, action: str) -> None:
        """Send ``typing_on``, ``typing_off`` or ``mark_seen``; Meta wants it alone in its request."""
        if action not in SENDER_ACTIONS:
            raise ValueError(f"sender_action must be one of {', '.join(sorted(SENDER_ACTIONS))}, got {action!r}")
        account = self.account(account_id)
        await self._call(
            account, {"recipient": {"id": recipient_id}, "sender_action": action}, self._settings.max_attempts
        )

    @staticmethod
    def _quick_replies(quick_replies: tuple[QuickReply, ...]) -> list[dict[str, str]]:
        if len(quick_replies) > MAX_QUICK_REPLIES:
            logger.warning(
                "dropping %d quick replies over Meta's limit of %d",
                len(quick_replies) - MAX_QUICK_REPLIES,
                MAX_QUICK_REPLIES,
            )
        return [
            {"content_type": "text", "title": reply.title[:MAX_QUICK_REPLY_TITLE], "payload": reply.payload}
            for reply in quick_replies[:MAX_QUICK_REPLIES]
        ]

    def _request(self, account: AccountConfig) -> tuple[URL, dict[str, str], dict[str, str]]:
        """URL, query parameters and headers for calls from ``account`` (the same for every call)."""
        request = self._requests.get(account.account_id)
        if request is None:
            url, params, headers = self._build_request(account)
            request = self._requests[account.account_id] = (URL(url), params, headers)
        return request

    def _build_request(self, account: AccountConfig) -> tuple[str, dict[str, str], dict[str, str]]:
        settings = self._settings
        token = account.token.value
        headers = {"Content-Type": "application/json"}
        if account.flavour is Flavour.IG_IG:
            url = f"{settings.instagram_base_url}/{settings.graph_version}/{account.account_id}/messages"
            headers["Authorization"] = f"Bearer {token}"
            return url, {}, headers
        url = f"{settings.graph_base_url}/{settings.graph_version}/{account.account_id}/messages"
        params = {"access_token": token}
        if account.app_secret:
            params["appsecret_proof"] = appsecret_proof(token, account.app_secret.value)
        return url, params, headers

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._settings.backoff_max_seconds, self._settings.backoff_base_seconds * 2.0 ** (attempt - 1))
        # Jitter in [50 %, 100 %] of the ceiling: spread retries, keep a minimum wait.
        return ceiling * (0.5 + 0.5 * self._jitter())

    async def _call(
        self, account: AccountConfig, body: dict[str, Any], max_attempts: int
    ) -> tuple[dict[str, Any], int]:
        """POST ``body``, up to ``max_attempts`` calls; returns Meta's answer and the number of calls made."""
        if self._session is None or self._limiter is None:
            raise RuntimeError("SendApiClient.start() was not called")
        settings = self._settings
        flavour = account.flavour
        key = f"{flavour}:{account.account_id}"
        rate = settings.rate_for(flavour)
        payload = orjson.dumps(body)
        deadline = time.monotonic() + settings.max_retry_seconds
        calls = 0
        while True:
            try:
                waited = await self._limiter.acquire(key, rate, max_wait=max(0.0, deadline - time.monotonic()))
            except RateLimitExceeded as exc:
                self.metrics.errors.labels(error_class=ErrorClass.RATE_LIMITED, code="other").inc()
                err = SendError(
                    ErrorClass.RATE_LIMITED,
                    meta_message="account is rate limited beyond the retry deadline",
                    retry_after=exc.wait,
                    attempts=calls,
                )
                logger.warning("send from account %s not attempted: %s", account.account_id, err)
                raise err from None
            if waited > 0:
                self.metrics.rate_limited_seconds.labels(flavour=flavour).inc(waited)
            calls += 1
            try:
                answer = await self._post(account, key, payload)
            except SendError as err:
                err.attempts = calls
                self.metrics.errors.labels(error_class=err.error_class, code=code_label(err.code)).inc()
                if not err.retriable:
                    self._log_failure(account, err)
                    raise
                delay = self._backoff(calls)
                if err.error_class is ErrorClass.RATE_LIMITED:
                    delay = max(delay, err.retry_after or 0.0)
                    err.retry_after = delay
                    # Blocking the account holds back every sender from it (every replica, with Redis).
                    await self._limiter.block(key, delay)
                if calls >= max_attempts or time.monotonic() + delay > deadline:
                    self._log_failure(account, err)
                    raise
                self.metrics.retries.labels(error_class=err.error_class).inc()
                logger.info(
                    "send from account %s failed (%s), attempt %d of %d, retrying in %.2fs",
                    account.account_id,
                    err.error_class,
                    calls,
                    max_attempts,
                    delay,
                )
                if err.error_class is not ErrorClass.RATE_LIMITED:
                    # Rate-limited retries wait in the limiter's acquire(), counted as rate-limited time.
                    await asyncio.sleep(delay)
                continue
            return answer, calls

    @staticmethod
    def _log_failure(account: AccountConfig, err: SendError) -> None:
        # A bad token or a blocked account stops every send from it: someone must act.
        needs_operator = err.error_class in {ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED}
        level = logging.ERROR if needs_operator else logging.WARNING
        logger.log(level, "send from account %s failed: %s", account.account_id, err)

    def _business_usage(self, header: str | None) -> BusinessUsage | None:
        """``parse_business_usage(header)``, reusing the last answer while the header repeats."""
        if header and self._usage is not None and self._usage[0] == header:
            return self._usage[1]
        usage = parse_business_usage(header)
        if header and usage is not None:
            self._usage = (header, usage)
        return usage

    async def _post(self, account: AccountConfig, key: str, payload: bytes) -> dict[str, Any]:
        """One HTTP call. Returns Meta's answer on success; raises SendError otherwise."""
        assert self._session is not None
        assert self._limiter is not None
        url, params, headers = self._request(account)
        secrets = (account.token.value, account.app_secret.value if account.app_secret else "")
        flavour = account.flavour
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, params=params, data=payload, headers=headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                status = response.status
                usage = self._business_usage(response.headers.get("X-Business-Use-Case-Usage"))
                retry_after = _retry_after_header(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp's text may hold the URL and so the access_token: name the error type only.
            self._requests_total(flavour, "error").inc()
            self._durations(flavour).observe(time.perf_counter() - started)
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise SendError(
                ErrorClass.TRANSIENT, meta_message=f"no answer from Meta: {kind}", ambiguous=_may_have_arrived(exc)
            ) from None
        self._durations(flavour).observe(time.perf_counter() - started)
        if usage is not None and usage.regain_seconds > 0:
            logger.warning(
                "Meta reports account %s over its usage; blocking sends for %.0fs",
                account.account_id,
                usage.regain_seconds,
            )
            await self._limiter.block(key, usage.regain_seconds)
            retry_after = max(retry_after or 0.0, usage.regain_seconds)
        try:
            answer: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            answer = None
        if status == 200 and isinstance(answer, dict) and "recipient_id" in answer:
            self._requests_total(flavour, "ok").inc()
            return answer
        self._requests_total(flavour, "error").inc()
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, dict):
            error_class = classify(status, None, None)
            raise SendError(
                error_class,
                http_status=status,
                meta_message=_scrub(f"unexpected answer ({len(raw)} bytes)", *secrets),
                retry_after=retry_after if error_class is ErrorClass.RATE_LIMITED else None,
                # Not Meta's answer: a proxy's 5xx (or a 2xx without an id) may hide an accepted send.
                ambiguous=status >= 500 or 200 <= status < 300,
            )
        code = _int_or_none(error.get("code"))
        subcode = _int_or_none(error.get("error_subcode"))
        meta_message = _scrub(str(error.get("message", "")), *secrets)
        error_class = classify(status, code, subcode)
        if code == 100 and "appsecret_proof" in meta_message:
            # Meta reports a wrong or missing proof as a generic "invalid parameter": it is a credential problem.
            error_class = ErrorClass.TOKEN_INVALID
        raise SendError(
            error_class,
            code=code,
            subcode=subcode,
            http_status=status,
            fbtrace_id=str(error["fbtrace_id"]) if error.get("fbtrace_id") else None,
            meta_message=meta_message,
            retry_after=retry_after if error_class is ErrorClass.RATE_LIMITED else None,
        )
