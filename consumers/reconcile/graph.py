"""Reading Meta's Graph API for reconcile: GETs within each account's read budget, errors classified once.

Every read of an account draws from one token bucket (Meta allows 2 Conversations API calls per
second per Page or Instagram professional account), kept in Redis when ``REDIS_URL`` is set so
that replicas share it (``consumers/send_api/ratelimit.py``, the Send API's limiters, with a
bucket of one call: calls evenly spaced), and the next read waits 1/rate after each answer too:
Meta counts calls when they arrive, and a call delayed on its way must not arrive close to the
next. ``X-Business-Use-Case-Usage`` blocks the account until Meta says access returns;
throttling errors (4, 17, 32, 613, 80002, 80006, HTTP 429) back off and block it; other failures
raise :class:`SendError` with the class from the one table in ``consumers/send_api/errors.py``
(the same Graph error codes). Tokens travel only in requests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.settings import ReconcileSettings
from consumers.send_api.client import appsecret_proof
from consumers.send_api.errors import ErrorClass, SendError, classify
from consumers.send_api.model import AccountConfig, Flavour
from consumers.send_api.ratelimit import (
    LocalRateLimiter,
    RateLimiter,
    RateLimitExceeded,
    RedisRateLimiter,
    parse_business_usage,
)
from igw.config import Secret

__all__ = ["Endpoint", "GraphReader"]

log = logging.getLogger(__name__)

_MAX_META_MESSAGE = 300


class Endpoint(StrEnum):
    """What a read is for: a metric label."""

    CONVERSATIONS = "conversations"
    CONVERSATION = "conversation"
    MESSAGE = "message"
    ME = "me"
    SUBSCRIBED_APPS = "subscribed_apps"
    APP_SUBSCRIPTIONS = "app_subscriptions"


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:_MAX_META_MESSAGE]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class GraphReader:
    """GETs on Meta's Graph API for the configured accounts (see the module docstring)."""

    def __init__(
        self,
        settings: ReconcileSettings,
        metrics: ReconcileMetrics,
        *,
        limiter: RateLimiter | None = None,
        session: aiohttp.ClientSession | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._limiter = limiter
        self._owns_limiter = limiter is None
        self._session = session
        self._owns_session = session is None
        self._jitter = jitter
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        # A bucket of one call: at most one call per 1/rate seconds, never a burst of two.
        self._burst_seconds = 1.0 / settings.rate_per_second

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        if self._limiter is None:
            if self._settings.redis_url:
                self._limiter = RedisRateLimiter.from_url(
                    self._settings.redis_url,
                    prefix=self._settings.rate_limit_key_prefix,
                    burst_seconds=self._burst_seconds,
                )
            else:
                self._limiter = LocalRateLimiter(burst_seconds=self._burst_seconds)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_limiter and self._limiter is not None:
            await self._limiter.close()
            self._limiter = None

    async def __aenter__(self) -> GraphReader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _url(self, account: AccountConfig, path: str) -> str:
        settings = self._settings.send_api
        base = settings.instagram_base_url if account.flavour is Flavour.IG_IG else settings.graph_base_url
        return f"{base}/{settings.graph_version}/{path}"

    def _auth(self, account: AccountConfig) -> tuple[dict[str, str], dict[str, str]]:
        token = account.token.value
        if account.flavour is Flavour.IG_IG:
            return {}, {"Authorization": f"Bearer {token}"}
        params = {"access_token": token}
        if account.app_secret:
            params["appsecret_proof"] = appsecret_proof(token, account.app_secret.value)
        return params, {}

    def _backoff(self, attempt: int) -> float:
        settings = self._settings
        ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._jitter())

    async def get(
        self,
        account: AccountConfig,
        path: str,
        params: Mapping[str, str],
        endpoint: Endpoint,
        *,
        deadline: float,
    ) -> dict[str, Any]:
        """GET ``path`` as ``account`` within its read budget, retrying what may pass; by ``deadline`` (monotonic)."""
        if self._session is None or self._limiter is None:
            raise RuntimeError("GraphReader.start() was not called")
        key = f"{account.flavour}:{account.account_id}"
        auth_params, headers = self._auth(account)
        url = self._url(account, path)
        query = {**params, **auth_params}
        secrets = (account.token.value, account.app_secret.value if account.app_secret else "")
        calls = 0
        while True:
            try:
                waited = await self._limiter.acquire(
                    key, self._settings.rate_per_second, max_wait=max(0.0, deadline - time.monotonic())
                )
            except RateLimitExceeded as exc:
                self._metrics.graph_calls.labels(account.account_id, endpoint, ErrorClass.RATE_LIMITED).inc()
                raise SendError(
                    ErrorClass.RATE_LIMITED,
                    meta_message="the account's read budget does not allow a call before the pass deadline",
                    retry_after=exc.wait,
                    attempts=calls,
                ) from None
            if waited > 0:
                self._metrics.rate_limited_seconds.labels(account.account_id).inc(waited)
            calls += 1
            try:
                try:
                    answer = await self._get(url, query, headers, key, account.account_id, secrets)
                finally:
                    # Spaced from the answer, not only from the send: a call that reached Meta late
                    # (a new connection, a busy host) never lands within 1/rate of the next one.
                    await self._limiter.block(key, self._burst_seconds)
            except SendError as err:
                err.attempts = calls
                self._metrics.graph_calls.labels(account.account_id, endpoint, err.error_class).inc()
                if not err.retriable:
                    raise
                delay = self._backoff(calls)
                if err.error_class is ErrorClass.RATE_LIMITED:
                    delay = max(delay, err.retry_after or 0.0)
                    err.retry_after = delay
                    # Every reader of the account waits (every replica, with Redis).
                    await self._limiter.block(key, delay)
                if calls >= self._settings.max_attempts or time.monotonic() + delay > deadline:
                    raise
                log.info(
                    "Graph read %s of account %s failed (%s), attempt %d of %d, retrying in %.2fs",
                    endpoint,
                    account.account_id,
                    err.error_class,
                    calls,
                    self._settings.max_attempts,
                    delay,
                )
                if err.error_class is not ErrorClass.RATE_LIMITED:
                    await asyncio.sleep(delay)  # rate-limited retries wait in acquire()
                continue
            self._metrics.graph_calls.labels(account.account_id, endpoint, "ok").inc()
            return answer

    async def get_app(self, app_id: str, token: Secret, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One GET with the app token (``<app id>|<app secret>``) on graph.facebook.com; no account budget."""
        if self._session is None:
            raise RuntimeError("GraphReader.start() was not called")
        settings = self._settings.send_api
        url = f"{settings.graph_base_url}/{settings.graph_version}/{path}"
        try:
            answer = await self._get(url, {**params, "access_token": token.value}, {}, None, "app", (token.value,))
        except SendError as err:
            self._metrics.graph_calls.labels("app", Endpoint.APP_SUBSCRIPTIONS, err.error_class).inc()
            raise
        self._metrics.graph_calls.labels("app", Endpoint.APP_SUBSCRIPTIONS, "ok").inc()
        return answer

    async def _get(
        self,
        url: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        key: str | None,
        account_id: str,
        secrets: tuple[str, ...],
    ) -> dict[str, Any]:
        """One HTTP call. Returns Meta's JSON object; raises SendError otherwise."""
        assert self._session is not None
        try:
            async with self._session.get(url, params=query, headers=headers, timeout=self._timeout) as response:
                raw = await response.read()
                status = response.status
                usage = parse_business_usage(response.headers.get("X-Business-Use-Case-Usage"))
                retry_after_header = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp's text may hold the URL and so the access_token: name the error type only.
            kind = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise SendError(ErrorClass.TRANSIENT, meta_message=f"no answer from Meta: {kind}") from None
        retry_after = None
        if retry_after_header and retry_after_header.replace(".", "", 1).isdigit():
            retry_after = float(retry_after_header)
        if usage is not None and usage.regain_seconds > 0 and key is not None and self._limiter is not None:
            log.warning("Meta reports account %s over its usage; no reads for %.0fs", account_id, usage.regain_seconds)
            await self._limiter.block(key, usage.regain_seconds)
            retry_after = max(retry_after or 0.0, usage.regain_seconds)
        try:
            answer: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        if status == 200 and isinstance(answer, dict) and error is None:
            return answer
        if not isinstance(error, dict):
            error_class = classify(status, None, None)
            raise SendError(
                error_class,
                http_status=status,
                meta_message=f"unexpected answer ({len(raw)} bytes)",
                retry_after=retry_after if error_class is ErrorClass.RATE_LIMITED else None,
            )
        code = _int_or_none(error.get("code"))
        subcode = _int_or_none(error.get("error_subcode"))
        meta_message = _scrub(str(error.get("message", "")), *secrets)
        error_class = classify(status, code, subcode)
        if code == 100 and "appsecret_proof" in meta_message:
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
