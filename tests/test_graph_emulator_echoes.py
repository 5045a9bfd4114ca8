"""The emulator's echoes (signed webhooks, Meta's fields per flavour), and sends taken with a slow or lost answer."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from consumers.send_api.client import SendApiClient
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import OutboundMessage
from gateway.signature import SignatureVerdict, SignatureVerifier
from igw.config import Env, Secret
from igw.errors import SettingsError
from igw_tools.commands import graph_emulator as emulator_command
from igw_tools.graph_emulator import EMULATOR_APP_ID, EmulatorConfig, InjectedFailure
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, TEST_ACCOUNTS, RunningEmulator, StartEmulator

USER = "5500000000000002"
SECRET = "echo-app-secret"


async def test_a_lost_answer_is_a_send_meta_took(graph_emulator: RunningEmulator) -> None:
    """With lose_answer the send is accepted and the connection dropped: the client calls it ambiguous."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    graph_emulator.state.inject(InjectedFailure(count=1, lose_answer=True))
    async with SendApiClient(graph_emulator.client_settings()) as client:
        with pytest.raises(SendError) as caught:
            await client.send_once(IG_ACCOUNT.account_id, OutboundMessage(USER, "taken, answer lost"))
        assert caught.value.error_class is ErrorClass.TRANSIENT
        assert caught.value.ambiguous
        assert caught.value.attempts == 1
        [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "next one"))
    assert [sent.body["message"]["text"] for sent in graph_emulator.state.messages] == [
        "taken, answer lost",
        "next one",
    ]
    assert graph_emulator.state.answers_lost == 1
    assert result.message_id == graph_emulator.state.messages[-1].message_id


async def test_a_refused_connection_is_not_ambiguous(graph_emulator: RunningEmulator) -> None:
    """No connection at all proves the request never left: not ambiguous (unlike a timeout or a dropped answer)."""
    settings = graph_emulator.client_settings(instagram_base_url="http://127.0.0.1:9", max_attempts=1)
    async with SendApiClient(settings) as client:
        with pytest.raises(SendError) as caught:
            await client.send_once(IG_ACCOUNT.account_id, OutboundMessage(USER, "nowhere"))
    assert not caught.value.ambiguous


async def test_a_slow_answer_comes_after_the_send_was_taken(graph_emulator: RunningEmulator) -> None:
    """With delay_answer the send is recorded at once and its answer comes later."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    graph_emulator.state.inject(InjectedFailure(count=1, delay_seconds=0.5, delay_answer=True))
    async with SendApiClient(graph_emulator.client_settings()) as client:
        started = time.monotonic()
        sending = asyncio.create_task(client.send_once(IG_ACCOUNT.account_id, OutboundMessage(USER, "slow")))
        await asyncio.sleep(0.2)
        assert len(graph_emulator.state.messages) == 1  # taken before the answer
        assert not sending.done()
        result = await sending
    assert time.monotonic() - started >= 0.5
    assert result.message_id == graph_emulator.state.messages[0].message_id


async def test_echoes_are_signed_webhooks_with_metas_fields_per_flavour(
    start_graph_emulator: StartEmulator, aiohttp_server: Callable[..., Any]
) -> None:
    """Every accepted message is echoed to the webhook, signed; Messenger's echo carries app_id and metadata."""
    received: list[dict[str, Any]] = []
    verifier = SignatureVerifier([SECRET])

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        if verifier.verify(body, request.headers.get("X-Hub-Signature-256")) is not SignatureVerdict.OK:
            return web.Response(status=403)
        received.append(orjson.loads(body))
        return web.Response(text="EVENT_RECEIVED")

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    emulator = await start_graph_emulator(
        EmulatorConfig(
            accounts=TEST_ACCOUNTS,
            enforce_window=False,
            echo_webhook_url=str(server.make_url("/webhook")),
            echo_app_secret=Secret(SECRET),
        )
    )
    async with SendApiClient(emulator.client_settings()) as client:
        await client.send_once(IG_ACCOUNT.account_id, OutboundMessage(USER, "on instagram", metadata="igw1:e1:0"))
        await client.send_once(
            MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "on messenger", metadata="igw1:e2:0")
        )
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    by_object = {body["object"]: body["entry"][0] for body in received}
    instagram = by_object["instagram"]["messaging"][0]
    messenger = by_object["page"]["messaging"][0]
    sent = {s.account_id: s for s in emulator.state.messages}
    assert instagram["sender"] == {"id": IG_ACCOUNT.account_id}
    assert instagram["recipient"] == {"id": USER}
    # Meta documents neither app_id nor metadata in Instagram's echoes; the client sends none there.
    assert instagram["message"] == {
        "mid": sent[IG_ACCOUNT.account_id].message_id,
        "text": "on instagram",
        "is_echo": True,
    }
    assert "metadata" not in sent[IG_ACCOUNT.account_id].body["message"]
    assert messenger["message"] == {
        "mid": sent[MESSENGER_ACCOUNT.account_id].message_id,
        "text": "on messenger",
        "is_echo": True,
        "app_id": int(EMULATOR_APP_ID),
        "metadata": "igw1:e2:0",
    }
    assert emulator.state.echoes_delivered == 2


async def test_metadata_longer_than_metas_limit_is_refused(graph_emulator: RunningEmulator) -> None:
    """Messenger's metadata is at most 1000 characters (code 100 beyond)."""
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    async with SendApiClient(graph_emulator.client_settings(max_attempts=1)) as client:
        [result] = await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "fits", metadata="m" * 1000))
        assert result.message_id
        # The client keeps to the limit itself; a raw body over it is refused.
    status = await _post_raw_messenger(graph_emulator, {"text": "too much", "metadata": "m" * 1001})
    assert status == 400


async def _post_raw_messenger(emulator: RunningEmulator, message: dict[str, Any]) -> int:
    import aiohttp

    from consumers.send_api.client import appsecret_proof

    token = MESSENGER_ACCOUNT.token.value
    assert MESSENGER_ACCOUNT.app_secret is not None
    params = {"access_token": token, "appsecret_proof": appsecret_proof(token, MESSENGER_ACCOUNT.app_secret.value)}
    body = {"recipient": {"id": USER}, "messaging_type": "RESPONSE", "message": message}
    url = f"{emulator.base_url}/v25.0/{MESSENGER_ACCOUNT.account_id}/messages"
    async with aiohttp.ClientSession() as http, http.post(url, params=params, json=body) as response:
        return response.status


def test_command_echo_webhook_needs_the_app_secret() -> None:
    """--echo-webhook signs with INSTAGRAM_APP_SECRET (the first of a list); without it the command refuses."""
    args = argparse.Namespace(
        accounts_file=None,
        no_window=True,
        require_appsecret_proof=False,
        inbound_grace=0.0,
        echo_webhook="http://127.0.0.1:8080/api/v1/instagram/webhook",
        app_id="42",
    )
    with pytest.raises(SettingsError) as caught:
        emulator_command.build_config(args, Env({}))
    assert caught.value.variable == "INSTAGRAM_APP_SECRET"
    config = emulator_command.build_config(args, Env({"INSTAGRAM_APP_SECRET": "first, second"}))
    assert config.echo_webhook_url == args.echo_webhook
    assert config.echo_app_secret is not None
    assert config.echo_app_secret.value == "first"
    assert config.app_id == "42"
