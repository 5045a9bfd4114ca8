"""The ``openai`` agent: any OpenAI-compatible Chat Completions endpoint.

``POST <OPENAI_BASE_URL>/chat/completions`` with the system prompt, the conversation's last turns
(kept in the store) and the user's message; the first choice's ``message.content`` is sent. An
answer that contains the handover marker (``[HANDOVER]`` by default; say in the system prompt when
to use it) hands the conversation to a person, after sending the rest of the text if any.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from consumers.agent_replies.agent import AgentError
from consumers.agent_replies.model import AgentReply, InboundEvent, Turn
from igw.config import Secret

__all__ = ["DEFAULT_SYSTEM_PROMPT", "OpenAIAgent"]

DEFAULT_SYSTEM_PROMPT = (
    "You answer direct messages for a business on Instagram or Messenger. Be brief, friendly and factual; "
    "never invent facts about the business. If the person asks for something you cannot answer, or wants "
    "a person, say that a member of the team will answer and include the marker [HANDOVER]."
)


class OpenAIAgent:
    name = "openai"
    uses_history = True

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        model: str,
        *,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        timeout: float = 20.0,
        max_tokens: int = 400,
        handover_marker: str = "[HANDOVER]",
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/chat/completions"
        self._api_key = api_key
        self._model = model
        self._system_prompt = system_prompt
        self._max_tokens = max_tokens
        self._marker = handover_marker
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def read_prompt(path: Path | None) -> str:
        if path is None:
            return DEFAULT_SYSTEM_PROMPT
        text = path.read_text(encoding="utf-8").strip()
        return text or DEFAULT_SYSTEM_PROMPT

    def messages(self, event: InboundEvent, history: Sequence[Turn]) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self._system_prompt}]
        messages.extend({"role": turn.role, "content": turn.text} for turn in history if turn.text)
        messages.append({"role": "user", "content": event.user_text or "(the user sent an attachment)"})
        return messages

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {
            "model": self._model,
            "messages": self.messages(event, history),
            "max_tokens": self._max_tokens,
            # Chat Completions' end-user field, for the provider's abuse monitoring; an opaque id.
            "user": event.conversation_id or event.account_id,
        }
        headers = {"Authorization": f"Bearer {self._api_key.value}", "Content-Type": "application/json"}
        try:
            async with self._session.post(self._url, data=orjson.dumps(body), headers=headers) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AgentError(f"chat completions endpoint unreachable: {exc.__class__.__name__}") from None
        if status != 200:
            raise AgentError(f"chat completions endpoint answered HTTP {status}")
        try:
            data: Any = orjson.loads(raw)
            content = data["choices"][0]["message"].get("content")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise AgentError("chat completions answer has no choices[0].message") from None
        if content is not None and not isinstance(content, str):
            raise AgentError("chat completions content is not text")
        text = (content or "").strip()
        handover = bool(self._marker) and self._marker in text
        if handover:
            text = text.replace(self._marker, "").strip()
        return AgentReply(text=text or None, handover=handover)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
