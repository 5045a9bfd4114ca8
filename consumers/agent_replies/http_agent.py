"""The ``http`` agent: asks an external agent service over HTTP.

The service gets ``POST <IGW_AGENT_URL>`` with the inbound envelope as the JSON body (plus an
``Authorization: Bearer`` header when ``IGW_AGENT_TOKEN`` is set) and answers:

- ``200`` with ``{"text": "...", "quick_replies": [{"title": ..., "payload": ...}]}``: send that;
- ``204``, an empty body, or ``{"text": null}``: send nothing;
- ``{"handover": true}`` (optionally with a ``text`` to send first): hand over to a person.

Any other status, a timeout or a body that is not this shape is an :class:`AgentError`: the
consumer tries again later (bounded), then records the event as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from consumers.agent_replies.agent import AgentError
from consumers.agent_replies.model import AgentReply, Button, InboundEvent, Turn
from igw.config import Secret

__all__ = ["HttpAgent", "parse_agent_answer"]


def parse_agent_answer(data: Any) -> AgentReply:
    """An agent service's JSON answer as an :class:`AgentReply`; :class:`AgentError` when malformed."""
    if data is None:
        return AgentReply()
    if not isinstance(data, dict):
        raise AgentError("agent answer is not a JSON object")
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise AgentError("agent answer: text is not a string")
    handover = data.get("handover", False)
    if not isinstance(handover, bool):
        raise AgentError("agent answer: handover is not true or false")
    raw_buttons = data.get("quick_replies") or []
    if not isinstance(raw_buttons, list):
        raise AgentError("agent answer: quick_replies is not a list")
    buttons = []
    for item in raw_buttons:
        if isinstance(item, str):
            buttons.append(Button(title=item, payload=item))
        elif isinstance(item, dict) and isinstance(item.get("title"), str):
            payload = item.get("payload", item["title"])
            buttons.append(Button(title=item["title"], payload=str(payload)))
        else:
            raise AgentError("agent answer: a quick reply needs a title")
    text = text if text and text.strip() else None
    return AgentReply(text=text, quick_replies=tuple(buttons) if text else (), handover=handover)


class HttpAgent:
    name = "http"
    uses_history = False

    def __init__(self, url: str, *, token: Secret | None = None, timeout: float = 10.0) -> None:
        self._url = url
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        headers = {"Content-Type": "application/json", "X-Igw-Event-Id": event.id}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token.value}"
        try:
            async with self._client().post(self._url, data=orjson.dumps(event.envelope), headers=headers) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Name the failure only: aiohttp's text may carry the URL with credentials in it.
            raise AgentError(f"agent service unreachable: {exc.__class__.__name__}") from None
        if status == 204 or (200 <= status < 300 and not body.strip()):
            return AgentReply()
        if status != 200:
            raise AgentError(f"agent service answered HTTP {status}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AgentError("agent service answered something that is not JSON") from None
        return parse_agent_answer(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
