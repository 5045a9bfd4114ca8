"""A local emulator of Meta's Graph API Send endpoints, for development and tests.

NOT a production path and not Meta: it never talks to Meta and nothing it accepts reaches anyone.
It serves both flavours on one address (point both base URLs of the client at it):
``POST /{version}/{id}/messages`` with ``Authorization: Bearer`` (Instagram Login) or
``access_token`` (Page token), and answers in Meta's documented formats: token and
``appsecret_proof`` checks, request validation, the 24 h messaging window derived from inbound
events it is told about, per-account rate limits with ``X-Business-Use-Case-Usage`` headers, and
failures injected on demand (among them a send accepted whose answer is lost), and, when told
where, the echo Meta sends for every message an app sends, as a signed webhook. Control endpoints
live under ``/_emulator/`` (docs/send-api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from consumers.send_api.client import MAX_METADATA, MAX_QUICK_REPLIES, SENDER_ACTIONS, appsecret_proof
from consumers.send_api.model import AccountConfig, Flavour
from consumers.send_api.text import IG_IG_MAX_TEXT_BYTES, PAGE_MAX_TEXT_CHARS
from gateway.signature import sign
from igw.config import Secret
from igw_tools.graph_emulator_ids import add_ids_routes
from igw_tools.simulator import DEV_APP_ID

if TYPE_CHECKING:
    from igw_tools.graph_conversations import ConversationsConfig, ConversationsState

__all__ = [
    "EMULATOR_APP_ID",
    "AcceptedSend",
    "EmulatorAccessLogger",
    "EmulatorConfig",
    "EmulatorState",
    "InjectedFailure",
    "config_key",
    "create_emulator_app",
    "echo_webhook_body",
    "state_key",
]

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v\d+\.\d+$")
_MESSAGING_TYPES = frozenset({"RESPONSE", "UPDATE", "MESSAGE_TAG"})
_QUICK_REPLY_TYPES = frozenset({"text", "user_phone_number", "user_email"})
# Meta's messages for the codes the emulator answers with by default.
_DEFAULT_MESSAGES = {
    1: "An unknown error occurred",
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "(#4) Application request limit reached",
    10: "(#10) This message is sent outside of allowed window.",
    100: "(#100) Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    200: "(#200) Permissions error",
    551: "(#551) This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
}
# The app id the emulator puts in Messenger echoes of what it accepted (set IGW_APP_ID to it):
# igw dev's, which its agent and analytics are given.
EMULATOR_APP_ID = DEV_APP_ID
# Echo webhooks: tries per echo (Meta retries failed deliveries too), and the wait between them.
_ECHO_ATTEMPTS = 5
_ECHO_RETRY_SECONDS = 0.5
_ECHO_WORKERS = 4


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """What the emulator knows. With no accounts it accepts any non-empty token for any id."""

    accounts: tuple[AccountConfig, ...] = ()
    enforce_window: bool = True
    window_seconds: float = 24 * 3600.0
    human_agent_window_seconds: float = 7 * 24 * 3600.0
    ig_rate_per_second: float = 100.0
    page_rate_per_second: float = 300.0
    # Meta's "Require App Secret" app setting: calls without appsecret_proof are refused.
    require_appsecret_proof: bool = False
    # When the emulator learns inbound events from a feed (igw dev's bridge from Kafka) it may hear of
    # a user's message a moment after the agent answers it: wait this long before calling the window shut.
    inbound_grace_seconds: float = 0.0
    # The newest sends and calls kept for listing; a long `igw dev` run must not grow without end.
    max_records: int = 10_000
    # Where to post, signed with this secret, the echo of every message accepted (Meta's
    # message_echoes): a gateway's webhook URL. None: no echoes.
    echo_webhook_url: str | None = None
    echo_app_secret: Secret | None = None
    # In Messenger echoes (Meta documents app_id and metadata there, not in Instagram's).
    app_id: str = EMULATOR_APP_ID


@dataclass(frozen=True, slots=True)
class AcceptedSend:
    """One send the emulator accepted, as listed by ``GET /_emulator/messages``."""

    account_id: str
    flavour: str
    recipient_id: str
    body: dict[str, Any]
    message_id: str | None
    kind: str  # "message" or "sender_action"
    auth: str  # "bearer" or "access_token"
    appsecret_proof: bool
    version: str
    time: float


@dataclass(slots=True)
class InjectedFailure:
    """The next ``count`` sends (of one account, or any) fail this way, or are only delayed.

    With ``code`` the answer is Meta's error body (HTTP ``http_status``, default 400); with only
    ``http_status`` it is a bare non-Meta answer (a proxy's 429 or 503); with neither, the send is
    delayed by ``delay_seconds`` and then handled normally.
    """

    count: int
    code: int | None = None
    subcode: int | None = None
    http_status: int | None = None
    account_id: str | None = None
    delay_seconds: float = 0.0
    message: str | None = None
    error_type: str = "OAuthException"
    regain_minutes: float = 0.0
    delay_answer: bool = False
    lose_answer: bool = False

    @property
    def after_accepting(self) -> bool:
        """The send is accepted first; the failure (a delay, or no answer) comes afterwards."""
        return self.delay_answer or self.lose_answer


@dataclass(slots=True)
class Call:
    """Every request to a messages endpoint, accepted or not (for assertions)."""

    account_id: str
    status: int
    auth: str
    time: float


@dataclass
class EmulatorState:
    messages: list[AcceptedSend] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    inbound: dict[tuple[str, str], float] = field(default_factory=dict)
    failures: list[InjectedFailure] = field(default_factory=list)
    windows: dict[str, deque[float]] = field(default_factory=dict)
    # Since start or the last clear, unlike the lists, which keep only the newest max_records.
    accepted: int = 0
    first_accepted_at: float | None = None
    last_accepted_at: float | None = None
    # Accepted sends whose answer was lost on purpose (InjectedFailure.lose_answer), and echoes.
    answers_lost: int = 0
    echoes_delivered: int = 0
    echoes_failed: int = 0

    # Set and replaced on every accepted send: wakes listings that wait for one (?wait=).
    news: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def count_accepted(self, when: float) -> None:
        self.accepted += 1
        if self.first_accepted_at is None:
            self.first_accepted_at = when
        self.last_accepted_at = when
        self.news.set()
        self.news = asyncio.Event()

    def clear_records(self) -> None:
        self.messages.clear()
        self.calls.clear()
        self.accepted = self.answers_lost = self.echoes_delivered = self.echoes_failed = 0
        self.first_accepted_at = self.last_accepted_at = None

    def record_inbound(self, account_id: str, user_id: str, timestamp_ms: float | None = None) -> None:
        """A user wrote to the account at ``timestamp_ms`` (now when None): the window opens."""
        when = time.time() if timestamp_ms is None else timestamp_ms / 1000.0
        key = (account_id, user_id)
        self.inbound[key] = max(self.inbound.get(key, 0.0), when)

    def inject(self, failure: InjectedFailure) -> None:
        self.failures.append(failure)

    def take_failure(self, account_ids: set[str]) -> InjectedFailure | None:
        for failure in self.failures:
            if failure.count > 0 and (failure.account_id is None or failure.account_id in account_ids):
                failure.count -= 1
                return failure
        return None

    def trim(self, keep: int) -> None:
        if len(self.messages) > keep:
            del self.messages[: len(self.messages) - keep]
        if len(self.calls) > keep:
            del self.calls[: len(self.calls) - keep]

    def sent_to(self, recipient_id: str) -> list[AcceptedSend]:
        return [sent for sent in self.messages if sent.recipient_id == recipient_id]


config_key = web.AppKey("emulator_config", EmulatorConfig)
state_key = web.AppKey("emulator_state", EmulatorState)
# Echoes waiting to be posted (only when EmulatorConfig.echo_webhook_url is set).
echo_queue_key = web.AppKey("emulator_echo_queue", asyncio.Queue)


class _GraphError(Exception):
    """An error answer in Meta's format."""

    def __init__(
        self,
        code: int,
        message: str | None = None,
        *,
        subcode: int | None = None,
        error_type: str = "OAuthException",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message or _DEFAULT_MESSAGES.get(code, "An unknown error occurred")
        self.subcode = subcode
        self.error_type = error_type
        self.status = status

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
        return _json({"error": error}, status=self.status, headers=headers)


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


@dataclass(frozen=True, slots=True)
class _Caller:
    account_id: str
    flavour: Flavour
    app_secret: Secret | None
    auth: str
    token: str


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in {"bearer", "oauth"} and value.strip():
        return value.strip()
    return None


def _identify(config: EmulatorConfig, object_id: str, token: str | None, auth: str) -> _Caller:
    if not token:
        raise _GraphError(190, "An access token is required to request this resource.")
    if not config.accounts:
        # No accounts configured: any token speaks for any id; the auth style tells the flavour.
        flavour = Flavour.IG_IG if auth == "bearer" else Flavour.MESSENGER
        return _Caller(object_id, flavour, None, auth, token)
    for account in config.accounts:
        if object_id in {account.account_id, "me"} and hmac.compare_digest(account.token.value, token):
            return _Caller(account.account_id, account.flavour, account.app_secret, auth, token)
    if object_id != "me" and all(account.account_id != object_id for account in config.accounts):
        raise _GraphError(
            100,
            f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
            "missing permissions, or does not support this operation.",
            subcode=33,
            error_type="GraphMethodException",
        )
    raise _GraphError(190)


def _usage_header(account_id: str, flavour: Flavour, used: int, limit: float, regain_minutes: float) -> dict[str, str]:
    percent = min(100, round(used * 100 / limit)) if limit > 0 else 0
    entry = {
        "type": "instagram" if flavour is not Flavour.MESSENGER else "messenger",
        "call_count": percent,
        "total_cputime": percent,
        "total_time": percent,
        "estimated_time_to_regain_access": regain_minutes,
    }
    return {"X-Business-Use-Case-Usage": orjson.dumps({account_id: [entry]}).decode()}


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    # curl -d sends JSON labelled as a form; a body that starts like JSON is read as JSON.
    if request.content_type == "application/x-www-form-urlencoded" and not raw.lstrip().startswith(b"{"):
        # Meta also takes form fields whose values are JSON (recipient={"id":...}&message={...}).
        form = await request.post()
        body: dict[str, Any] = {}
        for name, value in form.items():
            text = str(value)
            try:
                body[name] = orjson.loads(text) if text[:1] in {"{", "["} else text
            except orjson.JSONDecodeError:
                body[name] = text
        return body
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _GraphError(100, "(#100) The request body is not valid JSON", error_type="OAuthException") from None
    if not isinstance(parsed, dict):
        raise _GraphError(100, "(#100) The request body must be a JSON object")
    return parsed


def _validate(caller: _Caller, body: dict[str, Any]) -> tuple[str, str]:
    """Check ``body`` as Meta does; returns (recipient id, kind)."""
    instagram = caller.flavour is not Flavour.MESSENGER
    invalid_subcode = 2534015 if instagram else None
    recipient = body.get("recipient")
    recipient_id = None
    if isinstance(recipient, dict):
        recipient_id = recipient.get("id") or recipient.get("comment_id") or recipient.get("post_id")
    if not isinstance(recipient_id, str | int) or not str(recipient_id).strip():
        raise _GraphError(100, "(#100) The parameter recipient is required")
    action = body.get("sender_action")
    message = body.get("message")
    if action is not None:
        if message is not None:
            raise _GraphError(100, "(#100) sender_action cannot be sent together with message")
        if action not in SENDER_ACTIONS and action != "react" and action != "unreact":
            raise _GraphError(100, f"(#100) Invalid sender_action: {action}")
        return str(recipient_id), "sender_action"
    if not isinstance(message, dict):
        raise _GraphError(100, "(#100) The parameter message is required")
    messaging_type = body.get("messaging_type")
    if caller.flavour.uses_page_token and messaging_type is None:
        raise _GraphError(100, "(#100) The parameter messaging_type is required")
    if messaging_type is not None and messaging_type not in _MESSAGING_TYPES:
        raise _GraphError(100, "(#100) param messaging_type must be one of {RESPONSE, UPDATE, MESSAGE_TAG}")
    if messaging_type == "MESSAGE_TAG" and not body.get("tag"):
        raise _GraphError(100, "(#100) The parameter tag is required when messaging_type is MESSAGE_TAG")
    text = message.get("text")
    if text is None and not message.get("attachment") and not message.get("attachments"):
        raise _GraphError(
            100, "(#100) Invalid message data: message needs text or an attachment", subcode=invalid_subcode
        )
    if text is not None:
        if not isinstance(text, str) or not text:
            raise _GraphError(
                100, "(#100) Invalid message data: text must be a non-empty string", subcode=invalid_subcode
            )
        if caller.flavour is Flavour.IG_IG and len(text.encode("utf-8")) > IG_IG_MAX_TEXT_BYTES:
            raise _GraphError(
                100, f"(#100) Invalid message data: text exceeds {IG_IG_MAX_TEXT_BYTES} bytes", subcode=2534015
            )
        if caller.flavour is not Flavour.IG_IG and len(text) > PAGE_MAX_TEXT_CHARS:
            raise _GraphError(
                100,
                f"(#100) Length of param message[text] must be less than or equal to {PAGE_MAX_TEXT_CHARS}",
                subcode=invalid_subcode,
            )
    metadata = message.get("metadata")
    if metadata is not None and (not isinstance(metadata, str) or len(metadata) > MAX_METADATA):
        raise _GraphError(100, f"(#100) param message[metadata] must be a string of at most {MAX_METADATA} characters")
    quick_replies = message.get("quick_replies")
    if quick_replies is not None:
        if not isinstance(quick_replies, list) or len(quick_replies) > MAX_QUICK_REPLIES:
            raise _GraphError(
                100, f"(#100) param message[quick_replies] must have at most {MAX_QUICK_REPLIES} elements"
            )
        for reply in quick_replies:
            if not isinstance(reply, dict) or reply.get("content_type") not in _QUICK_REPLY_TYPES:
                raise _GraphError(
                    100, "(#100) Invalid quick reply: content_type must be text, user_phone_number or user_email"
                )
            if reply["content_type"] == "text" and not (reply.get("title") and reply.get("payload")):
                raise _GraphError(100, "(#100) A text quick reply needs a title and a payload")
    return str(recipient_id), "message"


async def _await_inbound(state: EmulatorState, key: tuple[str, str], grace: float) -> None:
    deadline = time.monotonic() + grace
    while key not in state.inbound and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll, dev only
        await asyncio.sleep(0.05)


def _check_window(
    config: EmulatorConfig, state: EmulatorState, caller: _Caller, recipient_id: str, body: dict[str, Any]
) -> None:
    if not config.enforce_window:
        return
    last = state.inbound.get((caller.account_id, recipient_id))
    age = time.time() - last if last is not None else None
    allowed = age is not None and age <= config.window_seconds
    if not allowed and body.get("messaging_type") == "MESSAGE_TAG":
        tag = str(body.get("tag", "")).upper()
        if tag == "HUMAN_AGENT":
            # For people answering, 7 days after the user's last message.
            allowed = age is not None and age <= config.human_agent_window_seconds
        else:
            # Messenger's other tags (updates on events, purchases, accounts) are not bound to the window.
            allowed = caller.flavour is Flavour.MESSENGER
    if not allowed:
        subcode = 2018278 if caller.flavour is Flavour.MESSENGER else 2534022
        raise _GraphError(10, subcode=subcode)


def _check_appsecret_proof(config: EmulatorConfig, caller: _Caller, proof: str | None) -> None:
    # Only graph.facebook.com (Page tokens) is documented to check the proof.
    if not (caller.flavour.uses_page_token and caller.app_secret):
        return
    if proof is not None and not hmac.compare_digest(proof, appsecret_proof(caller.token, caller.app_secret.value)):
        raise _GraphError(
            100, "Invalid appsecret_proof provided in the API argument", error_type="GraphMethodException"
        )
    if proof is None and config.require_appsecret_proof:
        raise _GraphError(
            100, "API calls from the server require an appsecret_proof argument", error_type="GraphMethodException"
        )


async def _messages(request: web.Request) -> web.Response:
    """``POST /{version}/{id}/messages``: auth, proof, injected failures, rate limit, validation, window."""
    config = request.app[config_key]
    state = request.app[state_key]
    version = request.match_info["version"]
    object_id = request.match_info["object_id"]
    if not _VERSION.match(version):
        return _GraphError(2500, f"Unknown path components: /{version}/{object_id}/messages").response()
    bearer = _bearer(request)
    token = bearer or request.query.get("access_token")
    auth = "bearer" if bearer else "access_token"
    try:
        caller = _identify(config, object_id, token, auth)
    except _GraphError as exc:
        state.calls.append(Call(object_id, exc.status, auth, time.time()))
        return exc.response()
    rate = config.page_rate_per_second if caller.flavour.uses_page_token else config.ig_rate_per_second
    window = state.windows.setdefault(caller.account_id, deque())
    now = time.monotonic()
    while window and now - window[0] >= 1.0:
        window.popleft()
    headers = _usage_header(caller.account_id, caller.flavour, len(window) + 1, rate, 0)
    try:
        _check_appsecret_proof(config, caller, request.query.get("appsecret_proof"))
        failure = state.take_failure({caller.account_id, object_id})
        if failure is not None and not failure.after_accepting:
            if failure.delay_seconds > 0:
                await asyncio.sleep(failure.delay_seconds)
            if failure.code is not None:
                headers = _usage_header(
                    caller.account_id, caller.flavour, len(window) + 1, rate, failure.regain_minutes
                )
                raise _GraphError(
                    failure.code,
                    failure.message,
                    subcode=failure.subcode,
                    error_type=failure.error_type,
                    status=failure.http_status or 400,
                )
            if failure.http_status is not None:
                state.calls.append(Call(caller.account_id, failure.http_status, auth, time.time()))
                return web.Response(status=failure.http_status, text=failure.message or "injected failure")
        if len(window) >= rate:
            headers = _usage_header(caller.account_id, caller.flavour, len(window) + 1, rate, 0)
            raise _GraphError(613 if caller.flavour.uses_page_token else 4)
        window.append(now)
        body = await _read_body(request)
        recipient_id, kind = _validate(caller, body)
        if config.inbound_grace_seconds and (caller.account_id, recipient_id) not in state.inbound:
            await _await_inbound(state, (caller.account_id, recipient_id), config.inbound_grace_seconds)
        _check_window(config, state, caller, recipient_id, body)
    except _GraphError as exc:
        state.calls.append(Call(caller.account_id, exc.status, auth, time.time()))
        return exc.response(headers)
    message_id = "m_" + secrets.token_urlsafe(24) if kind == "message" else None
    accepted_at = time.time()
    state.messages.append(
        AcceptedSend(
            account_id=caller.account_id,
            flavour=caller.flavour.value,
            recipient_id=recipient_id,
            body=body,
            message_id=message_id,
            kind=kind,
            auth=auth,
            appsecret_proof="appsecret_proof" in request.query,
            version=version,
            time=accepted_at,
        )
    )
    state.count_accepted(accepted_at)
    _record_sent(request.app, caller.account_id, recipient_id, body, message_id, accepted_at)
    state.calls.append(Call(caller.account_id, 200, auth, accepted_at))
    state.trim(config.max_records)
    if message_id is not None and echo_queue_key in request.app:
        request.app[echo_queue_key].put_nowait(state.messages[-1])
    if failure is not None and failure.lose_answer:
        state.answers_lost += 1
        return await _lose_answer(request, failure.delay_seconds)
    if failure is not None and failure.delay_answer and failure.delay_seconds > 0:
        await asyncio.sleep(failure.delay_seconds)
    answer: dict[str, str] = {"recipient_id": recipient_id}
    if message_id is not None:
        answer["message_id"] = message_id
    return _json(answer, headers=headers)


def _record_sent(
    app: web.Application, account_id: str, recipient_id: str, body: dict[str, Any], mid: str | None, when: float
) -> None:
    # The conversation history of the read side (igw_tools/graph_conversations.py) gains the send.
    from igw_tools.graph_conversations import record_sent

    record_sent(app, account_id, recipient_id, body, mid, when)


async def _lose_answer(request: web.Request, delay: float) -> web.Response:
    """The send stands, its answer never arrives: wait, then drop the connection without a word."""
    if delay > 0:
        await asyncio.sleep(delay)
    if request.transport is not None:
        request.transport.close()
    # Nothing reaches the client: its transport is closed.
    return web.Response(status=200)


def echo_webhook_body(sent: AcceptedSend, app_id: str, when_ms: int) -> bytes:
    """The webhook Meta sends for a message the app sent (``is_echo``), as the gateway receives it.

    Messenger echoes carry the sending app's ``app_id`` and the Send API's ``metadata``; Meta's
    Instagram pages document neither, so Instagram echoes carry the ``mid`` and the text only.
    """
    sent_message = sent.body.get("message") or {}
    message: dict[str, Any] = {"mid": sent.message_id, "is_echo": True}
    if isinstance(sent_message.get("text"), str):
        message["text"] = sent_message["text"]
    messenger = sent.flavour == Flavour.MESSENGER.value
    if messenger:
        message["app_id"] = int(app_id) if app_id.isdigit() else app_id
        if sent_message.get("metadata"):
            message["metadata"] = sent_message["metadata"]
    item = {
        "sender": {"id": sent.account_id},
        "recipient": {"id": sent.recipient_id},
        "timestamp": when_ms,
        "message": message,
    }
    body = {
        "object": "page" if messenger else "instagram",
        "entry": [{"id": sent.account_id, "time": when_ms, "messaging": [item]}],
    }
    return orjson.dumps(body)


async def _post_echoes(
    queue: asyncio.Queue[AcceptedSend], config: EmulatorConfig, state: EmulatorState, session: aiohttp.ClientSession
) -> None:
    """Post each queued echo to the webhook URL, signed; a failed delivery is tried a few times, as Meta does."""
    assert config.echo_webhook_url is not None
    assert config.echo_app_secret is not None
    secret = config.echo_app_secret.value
    while True:
        sent = await queue.get()
        body = echo_webhook_body(sent, config.app_id, int(time.time() * 1000))
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)}
        for attempt in range(_ECHO_ATTEMPTS):
            try:
                async with session.post(config.echo_webhook_url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        state.echoes_delivered += 1
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            if attempt + 1 < _ECHO_ATTEMPTS:
                await asyncio.sleep(_ECHO_RETRY_SECONDS * (attempt + 1))
        else:
            state.echoes_failed += 1
            logger.warning("echo of %s not delivered to the webhook after %d tries", sent.message_id, _ECHO_ATTEMPTS)


async def _echo_ctx(app: web.Application) -> AsyncIterator[None]:
    """Echo delivery for the app's lifetime: a queue, a client session and a few posting workers."""
    config = app[config_key]
    queue: asyncio.Queue[AcceptedSend] = asyncio.Queue()
    app[echo_queue_key] = queue
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        workers = [
            asyncio.create_task(_post_echoes(queue, config, app[state_key], session), name=f"emulator-echo-{n}")
            for n in range(_ECHO_WORKERS)
        ]
        try:
            yield
        finally:
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker


def _bad_request(problem: str) -> web.Response:
    return _json({"error": problem}, status=400)


async def _control_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def _inbound(request: web.Request) -> web.Response:
    body = await _control_body(request)
    account_id, user_id = body.get("account_id"), body.get("user_id")
    if not account_id or not user_id:
        return _bad_request("account_id and user_id are required")
    timestamp = body.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, int | float):
        return _bad_request("timestamp must be milliseconds since the epoch")
    request.app[state_key].record_inbound(str(account_id), str(user_id), timestamp)
    return _json({"ok": True})


async def _add_failure(request: web.Request) -> web.Response:
    body = await _control_body(request)
    try:
        failure = InjectedFailure(
            count=int(body.get("count", 1)),
            code=int(body["code"]) if body.get("code") is not None else None,
            subcode=int(body["subcode"]) if body.get("subcode") is not None else None,
            http_status=int(body["http_status"]) if body.get("http_status") is not None else None,
            account_id=str(body["account_id"]) if body.get("account_id") else None,
            delay_seconds=float(body.get("delay_seconds", 0.0)),
            message=str(body["message"]) if body.get("message") else None,
            error_type=str(body.get("type", "OAuthException")),
            regain_minutes=float(body.get("regain_minutes", 0.0)),
            delay_answer=bool(body.get("delay_answer", False)),
            lose_answer=bool(body.get("lose_answer", False)),
        )
    except (TypeError, ValueError) as exc:
        return _bad_request(f"invalid failure: {exc}")
    if failure.count < 1 or (failure.http_status is not None and not 200 <= failure.http_status <= 599):
        return _bad_request("count must be at least 1 and http_status an HTTP status")
    request.app[state_key].inject(failure)
    return _json({"ok": True, "pending": sum(f.count for f in request.app[state_key].failures)})


async def _list_failures(request: web.Request) -> web.Response:
    return _json([asdict(failure) for failure in request.app[state_key].failures if failure.count > 0])


async def _clear_failures(request: web.Request) -> web.Response:
    request.app[state_key].failures.clear()
    return _json({"ok": True})


# The longest a listing may wait for a send (?wait=), so a forgotten client does not hold a request for ever.
MAX_LISTING_WAIT_SECONDS = 60.0


async def _list_messages(request: web.Request) -> web.Response:
    """Accepted sends, optionally only to ``recipient`` and ``since`` (ms); ``wait`` seconds for one to come."""
    state = request.app[state_key]
    recipient = request.query.get("recipient")
    try:
        since = float(request.query["since"]) / 1000.0 if "since" in request.query else None
        wait = min(float(request.query.get("wait", "0")), MAX_LISTING_WAIT_SECONDS)
    except ValueError:
        return _bad_request("since is milliseconds since the epoch, wait a number of seconds")

    def chosen() -> list[AcceptedSend]:
        return [
            sent
            for sent in state.messages
            if (recipient is None or sent.recipient_id == recipient) and (since is None or sent.time >= since)
        ]

    found = chosen()
    deadline = time.monotonic() + wait
    while not found and (remaining := deadline - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.news.wait(), remaining)
        found = chosen()
    return _json([asdict(sent) for sent in found])


async def _clear_messages(request: web.Request) -> web.Response:
    request.app[state_key].clear_records()
    return _json({"ok": True})


async def _stats(request: web.Request) -> web.Response:
    """Counts since start (or the last clear): cheap to poll, unlike the listing."""
    state = request.app[state_key]
    return _json(
        {
            "accepted": state.accepted,
            "first_accepted_at": state.first_accepted_at,
            "last_accepted_at": state.last_accepted_at,
            "answers_lost": state.answers_lost,
            "echoes_delivered": state.echoes_delivered,
            "echoes_failed": state.echoes_failed,
        }
    )


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "emulator": True})


class EmulatorAccessLogger(AbstractAccessLogger):
    """Access log lines with the path only: the query string carries access tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status, time * 1000
        )


def create_emulator_app(
    config: EmulatorConfig,
    *,
    state: EmulatorState | None = None,
    conversations: ConversationsConfig | None = None,
    conversations_state: ConversationsState | None = None,
) -> web.Application:
    """The emulator as an aiohttp application (no I/O here); the read side is igw_tools/graph_conversations.py."""
    app = web.Application()
    app[config_key] = config
    app[state_key] = state if state is not None else EmulatorState()
    if config.echo_webhook_url:
        if config.echo_app_secret is None:
            raise ValueError("echo_webhook_url needs echo_app_secret: Meta signs every webhook")
        app.cleanup_ctx.append(_echo_ctx)
    app.router.add_post("/{version}/{object_id}/messages", _messages)
    app.router.add_post("/_emulator/inbound", _inbound)
    app.router.add_post("/_emulator/failures", _add_failure)
    app.router.add_get("/_emulator/failures", _list_failures)
    app.router.add_delete("/_emulator/failures", _clear_failures)
    app.router.add_get("/_emulator/messages", _list_messages)
    app.router.add_delete("/_emulator/messages", _clear_messages)
    app.router.add_get("/_emulator/stats", _stats)
    app.router.add_get("/healthz", _healthz)
    # Imported here: the read side builds on this module's helpers.
    from igw_tools.graph_conversations import add_conversation_routes

    add_conversation_routes(app, conversations, conversations_state)
    add_ids_routes(app)
    return app
