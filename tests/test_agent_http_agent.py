"""The http agent posts the envelope to an agent service and sends what it answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


async def agent_service(aiohttp_server: AiohttpServer, seen: list[dict[str, Any]]) -> str:
    """An agent service whose answer depends on the user id; records every request it gets."""
    failures: dict[str, int] = {}

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "authorization": request.headers.get("Authorization")})
        user = body["user_id"]
        if user == "buttons":
            return web.json_response(
                {
                    "text": "Pick one",
                    "quick_replies": [{"title": "Yes", "payload": "Y"}, {"title": "No", "payload": "N"}],
                }
            )
        if user == "silent":
            return web.Response(status=204)
        if user == "handover":
            return web.json_response({"handover": True, "text": "Passing you to a colleague"})
        if user == "flaky" and failures.setdefault(user, 0) < 2:
            failures[user] += 1
            return web.Response(status=502)
        if user == "broken":
            return web.Response(status=500)
        return web.json_response({"text": f"you said {body['message']['text']}"})

    app = web.Application()
    app.router.add_post("/agent", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/agent"))


async def test_http_agent_answers(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    aiohttp_server: AiohttpServer,
) -> None:
    """Text with buttons, 204 (nothing), a handover, a flaky service (retried) and a broken one (failed) end right."""
    seen: list[dict[str, Any]] = []
    url = await agent_service(aiohttp_server, seen)
    await start_agent(
        {"IGW_AGENT": "http", "IGW_AGENT_URL": url, "IGW_AGENT_TOKEN": "agent-secret", "IGW_AGENT_MAX_RETRIES": "2"}
    )
    users = ["buttons", "silent", "handover", "flaky", "broken"]
    events = {user: envelope(user, f"hi from {user}") for user in users}
    await publish(kafka_settings, list(events.values()))
    records = await topic_reader(kafka_settings.topic("replies"), expect=5, settle=0.3)
    outcome = {b["user_id"]: (b["outcome"], b["reason"]) for b in (orjson.loads(r.value) for r in records)}
    assert outcome == {
        "buttons": ("sent", "replied"),
        "silent": ("skipped", "no_reply"),
        "handover": ("sent", "handover"),
        "flaky": ("sent", "replied"),
        "broken": ("failed", "agent_error"),
    }
    sent = {s.recipient_id: s.body["message"] for s in agent_emulator.replies()}
    assert sent["buttons"]["quick_replies"] == [
        {"content_type": "text", "title": "Yes", "payload": "Y"},
        {"content_type": "text", "title": "No", "payload": "N"},
    ]
    assert sent["flaky"]["text"] == "you said hi from flaky"
    assert set(sent) == {"buttons", "handover", "flaky"}
    assert {s["authorization"] for s in seen} == {"Bearer agent-secret"}
    assert next(s["body"] for s in seen if s["body"]["user_id"] == "buttons") == events["buttons"]
    assert sum(1 for s in seen if s["body"]["user_id"] == "broken") == 3
    [dead] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert dead.headers["igw_reason"] == b"agent_error"
