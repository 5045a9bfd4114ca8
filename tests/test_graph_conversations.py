"""The emulator's read side answers as Meta documents: conversations, messages, subscriptions, the read rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from igw_tools.graph_conversations import DETAIL_LIMIT, ConversationsConfig
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, TEST_ACCOUNTS, RunningEmulator, StartEmulator

FAST = ConversationsConfig(read_rate_per_second=1000, app_secret="app-secret-0001")
IG = IG_ACCOUNT.account_id
BEARER = {"Authorization": f"Bearer {IG_ACCOUNT.token.value}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def record(http: aiohttp.ClientSession, emulator: RunningEmulator, messages: list[dict[str, Any]]) -> None:
    async with http.post(f"{emulator.base_url}/_emulator/conversations", json={"messages": messages}) as resp:
        assert resp.status == 200, await resp.text()


async def get(
    http: aiohttp.ClientSession,
    emulator: RunningEmulator,
    path: str,
    headers: dict[str, str] | None = None,
    **params: str,
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{emulator.base_url}/v25.0/{path}", params=params, headers=BEARER if headers is None else headers
    ) as resp:
        return resp.status, await resp.json()


def history(users: int, per_user: int, *, account: str = IG, start_ms: int | None = None) -> list[dict[str, Any]]:
    base = start_ms or int(time.time() * 1000) - 3_600_000
    return [
        {
            "account_id": account,
            "user_id": f"u{u}",
            "mid": f"m{u}-{i}",
            "text": f"text {i}",
            "timestamp": base + i * 60_000 + u,
        }
        for u in range(users)
        for i in range(per_user)
    ]


async def test_conversations_page_newest_first_with_expanded_messages(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """Conversations come newest first, paged by cursor until next is absent, messages expanded newest first."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), FAST)
    await record(http, emulator, history(5, 3))
    fields = "id,updated_time,participants,messages.limit(20){id,created_time,from,to,message}"
    seen: list[str] = []
    after: str | None = None
    for _ in range(5):
        params = {"platform": "instagram", "fields": fields, "limit": "2", **({"after": after} if after else {})}
        status, body = await get(http, emulator, f"{IG}/conversations", **params)
        assert status == 200, body
        for conversation in body["data"]:
            users = {p["id"] for p in conversation["participants"]["data"]}
            user = next(iter(users - {IG}))
            seen.append(user)
            messages = conversation["messages"]["data"]
            assert [m["id"] for m in messages] == [f"{user[0:0]}m{user[1:]}-{i}" for i in (2, 1, 0)]
            assert messages[0]["from"]["id"] == user
            assert messages[0]["to"]["data"][0]["id"] == IG
            assert messages[0]["message"] == "text 2"
        if "next" not in body["paging"]:
            break
        after = body["paging"]["cursors"]["after"]
    assert seen == ["u4", "u3", "u2", "u1", "u0"]


async def test_only_the_twenty_most_recent_messages_have_details(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """Beyond Meta's 20 a listed message shows id and time only, and asking for it answers 'deleted'."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), FAST)
    await record(http, emulator, history(1, DETAIL_LIMIT + 5))
    conversation_id = emulator.conversations.conversations[(IG, "u0")].id
    status, body = await get(http, emulator, conversation_id, fields="messages.limit(50){id,created_time,from,message}")
    assert status == 200
    messages = body["messages"]["data"]
    assert len(messages) == DETAIL_LIMIT + 5
    assert all("from" in m for m in messages[:DETAIL_LIMIT])
    assert all(set(m) == {"id", "created_time"} for m in messages[DETAIL_LIMIT:])
    status, body = await get(http, emulator, "m0-0", fields="id,from,message")
    assert status == 400
    assert body["error"]["code"] == 100
    assert "deleted" in body["error"]["message"]
    status, body = await get(http, emulator, f"m0-{DETAIL_LIMIT + 4}", fields="id,from,message")
    assert status == 200
    assert body == {"id": f"m0-{DETAIL_LIMIT + 4}", "from": {"username": "useru0", "id": "u0"}, "message": "text 24"}
    status, body = await get(http, emulator, conversation_id, fields="messages{id,colour}")
    assert status == 400
    assert "nonexisting field (colour)" in body["error"]["message"]


async def test_reads_beyond_two_per_second_are_throttled_and_counted(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """A third read within a second gets Meta's throttling error (80002 IG, 80006 Messenger); all are counted."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig())
    statuses = []
    for _ in range(3):
        status, body = await get(http, emulator, f"{IG}/conversations", platform="instagram")
        statuses.append(body["error"]["code"] if status != 200 else 200)
    assert statuses == [200, 200, 80002]
    page = {"access_token": MESSENGER_ACCOUNT.token.value}
    codes = []
    for _ in range(3):
        status, body = await get(http, emulator, f"{MESSENGER_ACCOUNT.account_id}/conversations", headers={}, **page)
        codes.append(body["error"]["code"] if status != 200 else 200)
    # Without appsecret_proof the Page token is refused only when proofs are required; here it passes.
    assert codes == [200, 200, 80006]
    async with http.get(f"{emulator.base_url}/_emulator/graph-calls") as resp:
        stats = await resp.json()
    assert stats[IG] == {"calls": 3, "throttled": 1, "max_per_second": 3}
    await asyncio.sleep(1.05)
    status, _ = await get(http, emulator, f"{IG}/conversations", platform="instagram")
    assert status == 200


async def test_subscribed_apps_and_app_subscriptions(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """An account lists the app with messages until Meta drops it; the app's subscriptions show active."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), FAST)
    status, body = await get(http, emulator, "me/subscribed_apps")
    assert status == 200
    assert body == {"data": [{"id": FAST.app_id, "name": "igw", "subscribed_fields": ["messages"]}]}
    app_token = {"access_token": f"{FAST.app_id}|{FAST.app_secret}"}
    status, body = await get(http, emulator, f"{FAST.app_id}/subscriptions", headers={}, **app_token)
    assert status == 200
    assert {(s["object"], s["active"]) for s in body["data"]} == {("instagram", True), ("page", True)}
    status, body = await get(http, emulator, f"{FAST.app_id}/subscriptions", headers={}, access_token="x|y")
    assert (status, body["error"]["code"]) == (400, 190)

    async with http.post(f"{emulator.base_url}/_emulator/subscriptions", json={"subscribed": False}) as resp:
        assert resp.status == 200
    assert (await get(http, emulator, "me/subscribed_apps"))[1] == {"data": []}
    body = (await get(http, emulator, f"{FAST.app_id}/subscriptions", headers={}, **app_token))[1]
    assert not any(s["active"] for s in body["data"])

    url = f"{emulator.base_url}/v25.0/me/subscribed_apps"
    async with http.post(url, params={"subscribed_fields": "messages,messaging_postbacks"}, headers=BEARER) as resp:
        assert await resp.json() == {"success": True}
    fields = (await get(http, emulator, "me/subscribed_apps"))[1]["data"][0]["subscribed_fields"]
    assert fields == ["messages", "messaging_postbacks"]
    async with http.delete(url, headers=BEARER) as resp:
        assert await resp.json() == {"success": True}
    assert (await get(http, emulator, "me/subscribed_apps"))[1] == {"data": []}


async def test_me_and_accepted_sends_join_the_conversation(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """GET /me names the account's user_id; a message the Send API accepted is the account's newest message."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), FAST)
    assert (await get(http, emulator, "me", fields="user_id,username"))[1]["user_id"] == IG
    await record(http, emulator, history(1, 1, start_ms=int(time.time() * 1000) - 5000))
    send = {"recipient": {"id": "u0"}, "message": {"text": "We are open"}}
    async with http.post(f"{emulator.base_url}/v25.0/{IG}/messages", json=send, headers=BEARER) as resp:
        sent = await resp.json()
    status, body = await get(
        http, emulator, f"{IG}/conversations", platform="instagram", fields="messages{id,from,message}"
    )
    assert status == 200
    newest = body["data"][0]["messages"]["data"][0]
    assert newest == {"id": sent["message_id"], "from": {"username": "business", "id": IG}, "message": "We are open"}
