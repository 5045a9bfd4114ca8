"""The Graph API emulator's read side: the Conversations API and webhook subscriptions.

NOT Meta, and never a production path (see ``igw_tools/graph_emulator.py``). It keeps each
account's conversations as a list of messages, and serves them as Meta documents them:

- ``GET /{version}/{account}/conversations?platform=…&fields=…&limit=…&after=…``: conversations,
  newest ``updated_time`` first, paged with ``paging.cursors.after`` and ``paging.next``; field
  expansion (``messages.limit(20){id,created_time,from,to,message,attachments}``) as in the
  Graph API's nested requests.
- ``GET /{version}/{conversation-id}?fields=messages…``: one conversation.
- ``GET /{version}/{message-id}?fields=…``: one message; only the 20 most recent messages of a
  conversation have details, older ones answer that the message has been deleted.
- ``GET /{version}/me?fields=user_id,username``: the Instagram-Login account behind a token.
- ``GET|POST|DELETE /{version}/{account}/subscribed_apps`` and ``GET /{version}/{app}/subscriptions``.

Reads are limited to ``read_rate_per_second`` calls per account (Meta: 2 per second per Page or
Instagram professional account), answered beyond it with Meta's throttling error (80002 for
Instagram, 80006 for Messenger). Every read is counted per account for ``GET /_emulator/graph-calls``.
Accepted Send API messages join their conversation as the account's messages (``record_sent``).
Control endpoints: ``POST|GET|DELETE /_emulator/conversations``, ``POST /_emulator/subscriptions``,
``GET|DELETE /_emulator/graph-calls``, ``POST /_emulator/graph-failures``.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from consumers.send_api.model import AccountConfig, Flavour
from igw_tools.graph_emulator import (
    EMULATOR_APP_ID,
    EmulatorConfig,
    InjectedFailure,
    _bearer,
    _Caller,
    _check_appsecret_proof,
    _GraphError,
    _json,
    _usage_header,
    config_key,
    state_key,
)

__all__ = [
    "DETAIL_LIMIT",
    "ConversationsConfig",
    "ConversationsState",
    "StoredMessage",
    "add_conversation_routes",
    "conversations_config_key",
    "conversations_key",
    "graph_time",
    "parse_fields",
    "record_sent",
]

# Meta: "you will only be able to query data for the 20 most recent messages in the conversation".
DETAIL_LIMIT: Final = 20
_DEFAULT_LIMIT: Final = 25
_MAX_LIMIT: Final = 100
_VERSION: Final = r"{version:v\d+\.\d+}"
_CONVERSATION_FIELDS: Final = frozenset({"id", "updated_time", "participants", "messages", "message_count", "link"})
_MESSAGE_FIELDS: Final = frozenset(
    {"id", "created_time", "from", "to", "message", "attachments", "is_unsupported", "reply_to", "story", "reactions"}
)
_THROTTLE_MESSAGES: Final = {
    80002: "(#80002) There have been too many calls to this Instagram account. Wait a bit and try again.",
    80006: "(#80006) There have been too many messenger api calls to this Page account. Wait a bit and try again.",
}


@dataclass(frozen=True, slots=True)
class ConversationsConfig:
    """The read side's settings: the app the accounts subscribe, and Meta's read rate."""

    app_id: str = EMULATOR_APP_ID
    # With an app secret, GET /{app}/subscriptions wants the app token "<app id>|<app secret>".
    app_secret: str | None = None
    callback_url: str = "https://igw.example/api/v1/instagram/webhook"
    read_rate_per_second: float = 2.0


@dataclass(slots=True)
class StoredMessage:
    """One message of a conversation; ``attachments`` in the webhook's shape (``type``, ``payload.url``)."""

    id: str
    created_ms: int
    from_id: str
    to_id: str
    text: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    outbound: bool = False


@dataclass(slots=True)
class Conversation:
    id: str
    account_id: str
    user_id: str
    platform: str
    messages: list[StoredMessage] = field(default_factory=list)  # oldest first

    @property
    def updated_ms(self) -> int:
        return self.messages[-1].created_ms if self.messages else 0


@dataclass
class ConversationsState:
    conversations: dict[tuple[str, str], Conversation] = field(default_factory=dict)
    by_id: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, tuple[Conversation, StoredMessage]] = field(default_factory=dict)
    # account -> subscribed fields of our app (absent: never subscribed or unsubscribed).
    subscribed: dict[str, list[str]] = field(default_factory=dict)
    # Accounts Meta unsubscribed: new accounts are subscribed on first sight unless listed here.
    unsubscribed: set[str] = field(default_factory=set)
    app_active: bool = True
    # Every read call per account (monotonic seconds), accepted or throttled, for the rate check.
    calls: dict[str, list[float]] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    windows: dict[str, deque[float]] = field(default_factory=dict)
    # Failures for the next reads (of one account, or any); the Send API's are its own.
    failures: list[InjectedFailure] = field(default_factory=list)

    def take_failure(self, account_id: str) -> InjectedFailure | None:
        for failure in self.failures:
            if failure.count > 0 and failure.account_id in (None, account_id):
                failure.count -= 1
                return failure
        return None

    def add(
        self,
        account_id: str,
        user_id: str,
        message: StoredMessage,
        *,
        platform: str = "instagram",
    ) -> Conversation:
        key = (account_id, user_id)
        conversation = self.conversations.get(key)
        if conversation is None:
            raw = f"{platform}:conversation:{account_id}:{user_id}".encode()
            conversation_id = "aWdG" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
            conversation = Conversation(conversation_id, account_id, user_id, platform)
            self.conversations[key] = conversation
            self.by_id[conversation_id] = conversation
        previous = self.messages.get(message.id)
        if previous is not None:
            previous[0].messages.remove(previous[1])
        conversation.messages.append(message)
        conversation.messages.sort(key=lambda m: m.created_ms)
        self.messages[message.id] = (conversation, message)
        return conversation

    def clear(self) -> None:
        self.conversations.clear()
        self.by_id.clear()
        self.messages.clear()

    def is_subscribed(self, account_id: str) -> bool:
        return account_id not in self.unsubscribed

    def fields_of(self, account_id: str) -> list[str]:
        return self.subscribed.get(account_id, ["messages"]) if self.is_subscribed(account_id) else []

    def count_call(self, account_id: str, when: float) -> None:
        self.calls.setdefault(account_id, []).append(when)

    def call_stats(self) -> dict[str, dict[str, Any]]:
        """Per account: reads made, reads throttled, and the most made within any one second."""
        stats = {}
        for account_id, times in self.calls.items():
            stats[account_id] = {
                "calls": len(times),
                "throttled": self.throttled.get(account_id, 0),
                "max_per_second": _max_in_window(times, 1.0),
            }
        return stats


def _max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    best = 0
    start = 0
    for end, when in enumerate(ordered):
        while when - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


conversations_key = web.AppKey("emulator_conversations", ConversationsState)
conversations_config_key = web.AppKey("emulator_conversations_config", ConversationsConfig)


def graph_time(ms: int) -> str:
    """Meta's time format: ``2022-07-12T19:11:07+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(ms // 1000))


# -- field expansion --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    limit: int | None = None
    children: tuple[FieldSpec, ...] = ()


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
            if depth < 0:
                raise _GraphError(100, "(#100) Syntax error: unbalanced brackets in fields")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise _GraphError(100, "(#100) Syntax error: unbalanced brackets in fields")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_FIELD: Final = re.compile(r"^(?P<name>[a-z_]+)(?:\.limit\((?P<limit>\d+)\))?(?:\{(?P<children>.*)\})?$", re.S)


def parse_fields(text: str | None) -> tuple[FieldSpec, ...]:
    """``id,messages.limit(20){id,from}`` as field specs (Graph API field expansion)."""
    if not text:
        return ()
    specs = []
    for part in _split_top(text):
        match = _FIELD.match(part)
        if match is None:
            raise _GraphError(100, f'(#100) Syntax error "Expected end of string instead of "{part[:30]}"."')
        children = parse_fields(match["children"]) if match["children"] is not None else ()
        specs.append(FieldSpec(match["name"], int(match["limit"]) if match["limit"] else None, children))
    return tuple(specs)


def _check_known(specs: Iterable[FieldSpec], known: frozenset[str], node_type: str) -> None:
    for spec in specs:
        if spec.name not in known:
            raise _GraphError(100, f"(#100) Tried accessing nonexisting field ({spec.name}) on node type ({node_type})")


# -- rendering ---------------------------------------------------------------------------------


def _party(platform: str, party_id: str, account_id: str) -> dict[str, str]:
    if platform == "messenger":
        name = "Business Page" if party_id == account_id else f"User {party_id[-4:]}"
        return {"name": name, "email": f"{party_id}@facebook.com", "id": party_id}
    return {"username": "business" if party_id == account_id else f"user{party_id[-4:]}", "id": party_id}


def _api_attachments(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rendered = []
    for index, attachment in enumerate(attachments):
        kind = attachment.get("type")
        payload = attachment.get("payload")
        url = payload.get("url") if isinstance(payload, dict) else None
        item: dict[str, Any] = {"id": f"att{index}"}
        if kind == "image":
            item.update(mime_type="image/jpeg", name="image.jpg", image_data={"url": url, "preview_url": url})
        elif kind == "video":
            item.update(mime_type="video/mp4", name="video.mp4", video_data={"url": url, "preview_url": url})
        elif kind == "audio":
            item.update(mime_type="audio/mpeg", name="audio.mp3", file_url=url)
        elif kind in {"story_mention", "story"}:
            continue  # shown under `story`, not as an attachment
        else:
            item.update(mime_type="application/octet-stream", name="file", file_url=url)
        rendered.append(item)
    return rendered


def _render_message(
    conversation: Conversation, message: StoredMessage, specs: tuple[FieldSpec, ...], *, detailed: bool
) -> dict[str, Any]:
    """A message with the fields asked for; without details (beyond the 20 newest) only id and time."""
    names = [spec.name for spec in specs] or ["id", "created_time"]
    out: dict[str, Any] = {}
    for name in names:
        if name == "id":
            out["id"] = message.id
        elif name == "created_time":
            out["created_time"] = graph_time(message.created_ms)
        elif not detailed:
            continue
        elif name == "from":
            out["from"] = _party(conversation.platform, message.from_id, conversation.account_id)
        elif name == "to":
            out["to"] = {"data": [_party(conversation.platform, message.to_id, conversation.account_id)]}
        elif name == "message":
            out["message"] = message.text or ""
        elif name == "attachments":
            rendered = _api_attachments(message.attachments)
            if rendered:
                out["attachments"] = {"data": rendered}
        elif name == "story":
            for attachment in message.attachments:
                if attachment.get("type") in {"story_mention", "story"}:
                    payload = attachment.get("payload")
                    url = payload.get("url") if isinstance(payload, dict) else None
                    out["story"] = {"mention": {"link": url, "id": f"story{message.id[-6:]}"}}
    return out


def _render_messages(
    conversation: Conversation, spec: FieldSpec, request: web.Request, *, after: str | None = None
) -> dict[str, Any]:
    newest_first = list(reversed(conversation.messages))
    limit = min(spec.limit or _DEFAULT_LIMIT, _MAX_LIMIT)
    start = _decode_cursor(after)
    page = newest_first[start : start + limit]
    data = [
        _render_message(conversation, message, spec.children, detailed=start + index < DETAIL_LIMIT)
        for index, message in enumerate(page)
    ]
    result: dict[str, Any] = {"data": data}
    if page:
        result["paging"] = {"cursors": {"before": _cursor(start), "after": _cursor(start + len(page))}}
        if start + len(page) < len(newest_first):
            result["paging"]["next"] = str(
                request.url.with_path(f"/{request.match_info['version']}/{conversation.id}/messages").with_query(
                    {"limit": str(limit), "after": _cursor(start + len(page))}
                )
            )
    return result


def _render_conversation(
    conversation: Conversation, specs: tuple[FieldSpec, ...], request: web.Request
) -> dict[str, Any]:
    _check_known(specs, _CONVERSATION_FIELDS, "Conversation")
    out: dict[str, Any] = {}
    for spec in specs or (FieldSpec("id"), FieldSpec("updated_time")):
        if spec.name == "id":
            out["id"] = conversation.id
        elif spec.name == "updated_time":
            out["updated_time"] = graph_time(conversation.updated_ms)
        elif spec.name == "participants":
            out["participants"] = {
                "data": [
                    _party(conversation.platform, conversation.user_id, conversation.account_id),
                    _party(conversation.platform, conversation.account_id, conversation.account_id),
                ]
            }
        elif spec.name == "message_count":
            out["message_count"] = len(conversation.messages)
        elif spec.name == "messages":
            _check_known(spec.children, _MESSAGE_FIELDS, "Message")
            out["messages"] = _render_messages(conversation, spec, request)
    out.setdefault("id", conversation.id)
    return out


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i{index}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(text[1:])) if text.startswith("i") else 0
    except (ValueError, UnicodeDecodeError):
        raise _GraphError(100, "(#100) Invalid cursor") from None


# -- auth and rate --------------------------------------------------------------------------


def _account_by_token(config: EmulatorConfig, token: str) -> AccountConfig | None:
    for account in config.accounts:
        if hmac.compare_digest(account.token.value, token):
            return account
    return None


def _read_caller(request: web.Request, object_id: str | None) -> _Caller:
    """Who calls: the configured account the token belongs to (any token for ``object_id`` without accounts)."""
    config = request.app[config_key]
    bearer = _bearer(request)
    token = bearer or request.query.get("access_token")
    auth = "bearer" if bearer else "access_token"
    if not token:
        raise _GraphError(190, "An access token is required to request this resource.")
    if not config.accounts:
        flavour = Flavour.IG_IG if auth == "bearer" else Flavour.MESSENGER
        return _Caller(object_id or "unknown", flavour, None, auth, token)
    account = _account_by_token(config, token)
    if account is None:
        raise _GraphError(190)
    caller = _Caller(account.account_id, account.flavour, account.app_secret, auth, token)
    _check_appsecret_proof(config, caller, request.query.get("appsecret_proof"))
    return caller


def _admit(request: web.Request, caller: _Caller) -> dict[str, str]:
    """Count the call; throttle it with Meta's error past the read rate. Returns the usage header."""
    state = request.app[conversations_key]
    rate = request.app[conversations_config_key].read_rate_per_second
    now = time.monotonic()
    state.count_call(caller.account_id, now)
    window = state.windows.setdefault(caller.account_id, deque())
    while window and now - window[0] >= 1.0:
        window.popleft()
    if len(window) >= rate:
        state.throttled[caller.account_id] = state.throttled.get(caller.account_id, 0) + 1
        code = 80006 if caller.flavour is Flavour.MESSENGER else 80002
        headers = _usage_header(caller.account_id, caller.flavour, len(window) + 1, rate, 0)
        raise _Throttled(code, headers)
    window.append(now)
    failure = state.take_failure(caller.account_id)
    if failure is not None and failure.code is not None:
        headers = _usage_header(caller.account_id, caller.flavour, len(window), rate, failure.regain_minutes)
        raise _Failed(failure, headers)
    if failure is not None and failure.http_status is not None:
        raise _Failed(failure, {})
    return _usage_header(caller.account_id, caller.flavour, len(window), rate, 0)


class _Throttled(_GraphError):
    def __init__(self, code: int, headers: dict[str, str]) -> None:
        super().__init__(code, _THROTTLE_MESSAGES[code], error_type="OAuthException")
        self.headers = headers


class _Failed(Exception):
    """An injected failure: Meta's error body (with ``code``) or a bare HTTP status."""

    def __init__(self, failure: InjectedFailure, headers: dict[str, str]) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.headers = headers

    def response(self) -> web.Response:
        failure = self.failure
        if failure.code is None:
            return web.Response(status=failure.http_status or 500, text=failure.message or "injected failure")
        error = _GraphError(
            failure.code,
            failure.message,
            subcode=failure.subcode,
            error_type=failure.error_type,
            status=failure.http_status or 400,
        )
        return error.response(self.headers)


async def _guarded(request: web.Request, handler: Any) -> web.Response:
    try:
        response: web.Response = await handler(request)
        return response
    except _Throttled as exc:
        return exc.response(exc.headers)
    except _Failed as exc:
        return exc.response()
    except _GraphError as exc:
        return exc.response()


def _owns(caller: _Caller, account_id: str, config: EmulatorConfig) -> bool:
    return not config.accounts or caller.account_id == account_id


# -- Graph endpoints --------------------------------------------------------------------------


async def _list_conversations(request: web.Request) -> web.Response:
    return await _guarded(request, _list_conversations_inner)


async def _list_conversations_inner(request: web.Request) -> web.Response:
    object_id = request.match_info["object_id"]
    caller = _read_caller(request, None if object_id == "me" else object_id)
    config = request.app[config_key]
    account_id = caller.account_id if object_id == "me" else object_id
    if not _owns(caller, account_id, config):
        raise _GraphError(190, "(#190) This token does not belong to the account")
    headers = _admit(request, caller)
    platform = request.query.get("platform")
    expected = "messenger" if caller.flavour is Flavour.MESSENGER else "instagram"
    if platform is not None and platform not in {"instagram", "messenger"}:
        raise _GraphError(100, "(#100) param platform must be one of {INSTAGRAM, MESSENGER}")
    specs = parse_fields(request.query.get("fields"))
    state = request.app[conversations_key]
    wanted_user = request.query.get("user_id")
    conversations = sorted(
        (
            c
            for c in state.conversations.values()
            if c.account_id == account_id
            and c.platform == (platform or expected)
            and (wanted_user is None or c.user_id == wanted_user)
        ),
        key=lambda c: c.updated_ms,
        reverse=True,
    )
    try:
        limit = min(int(request.query.get("limit", _DEFAULT_LIMIT)), _MAX_LIMIT)
    except ValueError:
        raise _GraphError(100, "(#100) param limit must be a number") from None
    start = _decode_cursor(request.query.get("after"))
    page = conversations[start : start + max(1, limit)]
    result: dict[str, Any] = {"data": [_render_conversation(c, specs, request) for c in page]}
    if page:
        after = _cursor(start + len(page))
        result["paging"] = {"cursors": {"before": _cursor(start), "after": after}}
        if start + len(page) < len(conversations):
            query = {k: v for k, v in request.query.items() if k not in {"after", "access_token", "appsecret_proof"}}
            result["paging"]["next"] = str(request.url.with_query({**query, "after": after}))
    return _json(result, headers=headers)


async def _node(request: web.Request) -> web.Response:
    return await _guarded(request, _node_inner)


async def _node_inner(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"]
    state = request.app[conversations_key]
    specs = parse_fields(request.query.get("fields"))
    if node_id == "me":
        caller = _read_caller(request, None)
        headers = _admit(request, caller)
        known = frozenset({"id", "user_id", "username", "name"})
        _check_known(specs, known, "User")
        me = {"id": "app-scoped-" + caller.account_id[-6:], "user_id": caller.account_id, "username": "business"}
        return _json(
            {k: v for k, v in me.items() if not specs or k in {s.name for s in specs} or k == "id"}, headers=headers
        )
    conversation = state.by_id.get(node_id)
    if conversation is not None:
        caller = _read_caller(request, conversation.account_id)
        if not _owns(caller, conversation.account_id, request.app[config_key]):
            raise _GraphError(
                100, f"(#100) Object with ID '{node_id}' does not exist, cannot be loaded due to missing permissions"
            )
        headers = _admit(request, caller)
        return _json(_render_conversation(conversation, specs, request), headers=headers)
    found = state.messages.get(node_id)
    if found is not None:
        conversation, message = found
        caller = _read_caller(request, conversation.account_id)
        if not _owns(caller, conversation.account_id, request.app[config_key]):
            raise _GraphError(
                100, f"(#100) Object with ID '{node_id}' does not exist, cannot be loaded due to missing permissions"
            )
        headers = _admit(request, caller)
        _check_known(specs, _MESSAGE_FIELDS, "Message")
        newest_first = list(reversed(conversation.messages))
        if newest_first.index(message) >= DETAIL_LIMIT:
            raise _GraphError(100, "(#100) The message has been deleted", error_type="GraphMethodException")
        return _json(_render_message(conversation, message, specs, detailed=True), headers=headers)
    caller = _read_caller(request, node_id)
    _admit(request, caller)
    raise _GraphError(
        100,
        f"Unsupported get request. Object with ID '{node_id}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation.",
        subcode=33,
        error_type="GraphMethodException",
    )


async def _conversation_messages(request: web.Request) -> web.Response:
    """``GET /{conversation-id}/messages``: the edge ``paging.next`` of a nested messages list points at."""

    async def inner(request: web.Request) -> web.Response:
        conversation = request.app[conversations_key].by_id.get(request.match_info["object_id"])
        if conversation is None:
            raise _GraphError(100, "(#100) Unsupported get request", subcode=33, error_type="GraphMethodException")
        caller = _read_caller(request, conversation.account_id)
        headers = _admit(request, caller)
        children = parse_fields(request.query.get("fields"))
        _check_known(children, _MESSAGE_FIELDS, "Message")
        limit = int(request.query.get("limit", _DEFAULT_LIMIT))
        spec = FieldSpec("messages", limit, children)
        return _json(_render_messages(conversation, spec, request, after=request.query.get("after")), headers=headers)

    return await _guarded(request, inner)


async def _subscribed_apps(request: web.Request) -> web.Response:
    async def inner(request: web.Request) -> web.Response:
        object_id = request.match_info["object_id"]
        caller = _read_caller(request, None if object_id == "me" else object_id)
        account_id = caller.account_id if object_id == "me" else object_id
        if not _owns(caller, account_id, request.app[config_key]):
            raise _GraphError(190, "(#190) This token does not belong to the account")
        state = request.app[conversations_key]
        app_config = request.app[conversations_config_key]
        if request.method == "GET":
            headers = _admit(request, caller)
            fields = state.fields_of(account_id)
            data = [{"id": app_config.app_id, "name": "igw", "subscribed_fields": fields}] if fields else []
            return _json({"data": data}, headers=headers)
        if request.method == "DELETE":
            state.unsubscribed.add(account_id)
            state.subscribed.pop(account_id, None)
            return _json({"success": True})
        raw = request.query.get("subscribed_fields")
        if raw is None:
            form = await request.post()
            raw = str(form.get("subscribed_fields", "")) or None
        if not raw:
            raise _GraphError(100, "(#100) The parameter subscribed_fields is required.")
        state.unsubscribed.discard(account_id)
        state.subscribed[account_id] = [name.strip() for name in raw.split(",") if name.strip()]
        return _json({"success": True})

    return await _guarded(request, inner)


async def _app_subscriptions(request: web.Request) -> web.Response:
    async def inner(request: web.Request) -> web.Response:
        app_config = request.app[conversations_config_key]
        app_id = request.match_info["object_id"]
        token = _bearer(request) or request.query.get("access_token") or ""
        given_app, _, given_secret = token.partition("|")
        if given_app != app_config.app_id or app_id != app_config.app_id:
            raise _GraphError(190, "Invalid OAuth access token - Cannot parse access token")
        if app_config.app_secret is not None and not hmac.compare_digest(given_secret, app_config.app_secret):
            raise _GraphError(190, "Invalid OAuth access token signature.")
        state = request.app[conversations_key]
        version = request.match_info["version"]
        data = [
            {
                "object": obj,
                "callback_url": app_config.callback_url,
                "active": state.app_active,
                "fields": [
                    {"name": "messages", "version": version},
                    {"name": "messaging_postbacks", "version": version},
                ],
            }
            for obj in ("instagram", "page")
        ]
        return _json({"data": data})

    return await _guarded(request, inner)


# -- the Send API's accepted messages join their conversation ------------------------------


def record_sent(
    app: web.Application, account_id: str, recipient_id: str, body: dict[str, Any], message_id: str | None, when: float
) -> None:
    """An accepted send with text or an attachment becomes the account's message in the conversation."""
    state = app.get(conversations_key)
    if state is None or message_id is None:
        return
    message = body.get("message")
    if not isinstance(message, dict):
        return
    text = message.get("text") if isinstance(message.get("text"), str) else None
    flavour = next((a.flavour for a in app[config_key].accounts if a.account_id == account_id), None)
    platform = "messenger" if flavour is Flavour.MESSENGER else "instagram"
    stored = StoredMessage(message_id, int(when * 1000), account_id, recipient_id, text, [], outbound=True)
    state.add(account_id, recipient_id, stored, platform=platform)


# -- control endpoints ------------------------------------------------------------------------


async def _record(request: web.Request) -> web.Response:
    """``{"messages": [{account_id, user_id, mid?, text?, attachments?, timestamp?, direction?, platform?}]}``."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    items = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return _json({"error": 'expected {"messages": [...]}'}, status=400)
    state = request.app[conversations_key]
    emulator_state = request.app[state_key]
    recorded = []
    for item in items:
        if not isinstance(item, dict) or not item.get("account_id") or not item.get("user_id"):
            return _json({"error": "each message needs account_id and user_id"}, status=400)
        account_id, user_id = str(item["account_id"]), str(item["user_id"])
        outbound = item.get("direction", "inbound") == "outbound"
        timestamp = item.get("timestamp")
        created_ms = int(timestamp) if isinstance(timestamp, int | float) else int(time.time() * 1000)
        mid = str(item.get("mid") or "aWdf" + secrets.token_urlsafe(24))
        given = item.get("attachments")
        attachments: list[dict[str, Any]] = [a for a in given if isinstance(a, dict)] if isinstance(given, list) else []
        stored = StoredMessage(
            mid,
            created_ms,
            account_id if outbound else user_id,
            user_id if outbound else account_id,
            item.get("text") if isinstance(item.get("text"), str) else None,
            attachments,
            outbound,
        )
        state.add(account_id, user_id, stored, platform=str(item.get("platform") or "instagram"))
        if not outbound:
            # The user wrote: the Send API's 24 h window opens, as the webhook would have told it.
            emulator_state.record_inbound(account_id, user_id, created_ms)
        recorded.append(mid)
    return _json({"ok": True, "mids": recorded})


async def _list_recorded(request: web.Request) -> web.Response:
    state = request.app[conversations_key]
    return _json(
        [
            {
                "id": c.id,
                "account_id": c.account_id,
                "user_id": c.user_id,
                "platform": c.platform,
                "messages": [
                    {"mid": m.id, "timestamp": m.created_ms, "outbound": m.outbound, "text": m.text} for m in c.messages
                ],
            }
            for c in state.conversations.values()
        ]
    )


async def _clear_recorded(request: web.Request) -> web.Response:
    request.app[conversations_key].clear()
    return _json({"ok": True})


async def _set_subscription(request: web.Request) -> web.Response:
    """``{"account_id": ID or null (every account and the app), "subscribed": bool}``: Meta's side of it."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict) or not isinstance(body.get("subscribed"), bool):
        return _json({"error": 'expected {"account_id": ..., "subscribed": true|false}'}, status=400)
    state = request.app[conversations_key]
    subscribed = body["subscribed"]
    account_id = body.get("account_id")
    accounts = (
        [str(account_id)]
        if account_id
        else [a.account_id for a in request.app[config_key].accounts] + [k[0] for k in state.conversations]
    )
    for account in accounts:
        if subscribed:
            state.unsubscribed.discard(account)
        else:
            state.unsubscribed.add(account)
            state.subscribed.pop(account, None)
    if not account_id:
        state.app_active = subscribed
    return _json({"ok": True})


async def _add_read_failure(request: web.Request) -> web.Response:
    """Like ``POST /_emulator/failures``, for the next reads: ``{count, code, subcode, http_status, account_id,
    message, regain_minutes}``."""
    try:
        body = await request.json()
        failure = InjectedFailure(
            count=int(body.get("count", 1)),
            code=int(body["code"]) if body.get("code") is not None else None,
            subcode=int(body["subcode"]) if body.get("subcode") is not None else None,
            http_status=int(body["http_status"]) if body.get("http_status") is not None else None,
            account_id=str(body["account_id"]) if body.get("account_id") else None,
            message=str(body["message"]) if body.get("message") else None,
            regain_minutes=float(body.get("regain_minutes", 0.0)),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _json({"error": f"invalid failure: {exc}"}, status=400)
    if failure.count < 1 or (failure.code is None and failure.http_status is None):
        return _json({"error": "count must be at least 1, and a code or an http_status is needed"}, status=400)
    request.app[conversations_key].failures.append(failure)
    return _json({"ok": True})


async def _graph_calls(request: web.Request) -> web.Response:
    return _json(request.app[conversations_key].call_stats())


async def _clear_graph_calls(request: web.Request) -> web.Response:
    state = request.app[conversations_key]
    state.calls.clear()
    state.throttled.clear()
    state.windows.clear()
    return _json({"ok": True})


def add_conversation_routes(
    app: web.Application, config: ConversationsConfig | None = None, state: ConversationsState | None = None
) -> None:
    """Serve the read side on ``app`` (the emulator application)."""
    app[conversations_config_key] = config or ConversationsConfig()
    app[conversations_key] = state if state is not None else ConversationsState()
    app.router.add_get(f"/{_VERSION}/{{object_id}}/conversations", _list_conversations)
    app.router.add_get(f"/{_VERSION}/{{object_id}}/messages", _conversation_messages)
    for method in ("GET", "POST", "DELETE"):
        app.router.add_route(method, f"/{_VERSION}/{{object_id}}/subscribed_apps", _subscribed_apps)
    app.router.add_get(f"/{_VERSION}/{{object_id}}/subscriptions", _app_subscriptions)
    app.router.add_get(f"/{_VERSION}/{{node_id}}", _node)
    app.router.add_post("/_emulator/conversations", _record)
    app.router.add_get("/_emulator/conversations", _list_recorded)
    app.router.add_delete("/_emulator/conversations", _clear_recorded)
    app.router.add_post("/_emulator/subscriptions", _set_subscription)
    app.router.add_get("/_emulator/graph-calls", _graph_calls)
    app.router.add_post("/_emulator/graph-failures", _add_read_failure)
    app.router.add_delete("/_emulator/graph-calls", _clear_graph_calls)
