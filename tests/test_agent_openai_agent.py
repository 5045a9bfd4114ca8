"""The openai agent speaks the Chat Completions wire format and keeps the conversation's last turns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from igw.config import KafkaSettings
from tests.plugins.agent import Emulator, StartAgent, envelope, publish
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.kafka

AiohttpServer = Callable[..., Awaitable[TestServer]]


async def chat_completions(aiohttp_server: AiohttpServer, requests: list[dict[str, Any]]) -> str:
    """A local OpenAI-compatible endpoint: ``POST /v1/chat/completions`` answering from the last user message."""

    async def complete(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer sk-test-key":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        requests.append(body)
        last = body["messages"][-1]["content"]
        content = (
            "I will get a colleague. [HANDOVER]" if "doctor" in last else f"answer {len(body['messages'])}: {last}"
        )
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/v1"))


async def test_openai_agent_keeps_history_and_hands_over(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    aiohttp_server: AiohttpServer,
    agent_store_environ: dict[str, str],
    tmp_path: Path,
) -> None:
    """Each request carries the system prompt and the last turns; the handover marker pauses the conversation."""
    requests: list[dict[str, Any]] = []
    base_url = await chat_completions(aiohttp_server, requests)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("You are the clinic's assistant.", encoding="utf-8")
    extra = {
        "IGW_AGENT": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-test-key",
        "IGW_OPENAI_MODEL": "local-model",
        "IGW_OPENAI_SYSTEM_PROMPT_FILE": str(prompt),
        "IGW_AGENT_HISTORY_TURNS": "3",
        **agent_store_environ,
    }
    await start_agent(extra)
    for n, text in enumerate(["first", "second", "third"]):
        await publish(kafka_settings, [envelope("chat", text)])
        await agent_emulator.wait_for(n + 1)
    await publish(kafka_settings, [envelope("chat", "can I see a doctor"), envelope("chat", "hello?")])
    records = await topic_reader(kafka_settings.topic("replies"), expect=5, settle=0.3)
    reasons = [orjson.loads(r.value)["reason"] for r in sorted(records, key=lambda r: r.offset)]
    assert reasons == ["replied", "replied", "replied", "handover", "human_takeover"]
    assert [s.body["message"]["text"] for s in agent_emulator.replies()] == [
        "answer 2: first",
        "answer 4: second",
        "answer 5: third",
        "I will get a colleague.",
    ]
    assert requests[0]["model"] == "local-model"
    assert requests[0]["messages"][0] == {"role": "system", "content": "You are the clinic's assistant."}
    # The third request: system, the last 3 turns kept (user, assistant, user... trimmed), then the new message.
    assert [m["role"] for m in requests[2]["messages"]] == ["system", "assistant", "user", "assistant", "user"]
    assert requests[2]["messages"][1:] == [
        {"role": "assistant", "content": "answer 2: first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "answer 4: second"},
        {"role": "user", "content": "third"},
    ]
