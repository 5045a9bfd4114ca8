"""The Graph API emulator answers in Meta's formats: auth, validation, window, rate limits, failures."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumers.send_api.client import AccountConfig, Flavour, OutboundMessage, SendApiClient, appsecret_proof
from consumers.send_api.ratelimit import parse_business_usage
from consumers.send_api.settings import SendApiSettings
from igw.config import Secret
from igw_tools.cli import build_parser
from igw_tools.commands import graph_emulator as emulator_command
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.graph_emulator import (
    IG_ACCOUNT,
    IGFB_ACCOUNT,
    MESSENGER_ACCOUNT,
    TEST_ACCOUNTS,
    RunningEmulator,
    StartEmulator,
)

USER = "5500000000000001"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def post_ig(
    http: aiohttp.ClientSession, emulator: RunningEmulator, body: dict[str, Any], *, token: str | None = None
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token or IG_ACCOUNT.token.value}"}
    url = f"{emulator.base_url}/v25.0/{IG_ACCOUNT.account_id}/messages"
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("X-Business-Use-Case-Usage")


async def post_page(
    http: aiohttp.ClientSession,
    emulator: RunningEmulator,
    body: dict[str, Any],
    *,
    account: Any = MESSENGER_ACCOUNT,
    token: str | None = None,
    proof: str | None = None,
) -> tuple[int, dict[str, Any]]:
    params = {"access_token": token or account.token.value}
    if proof is not None:
        params["appsecret_proof"] = proof
    url = f"{emulator.base_url}/v25.0/{account.account_id}/messages"
    async with http.post(url, json=body, params=params) as response:
        return response.status, await response.json()


def text_body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"recipient": {"id": USER}, "message": {"text": text}, **extra}


async def test_healthz(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """The health endpoint answers 200 and says it is the emulator."""
    async with http.get(f"{graph_emulator.base_url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["emulator"] is True


async def test_ig_send_accepted_with_unique_message_ids(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    """A Bearer-authenticated IG-IG send inside the window returns recipient_id and a fresh m_ message id."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    ids = set()
    for _ in range(3):
        status, answer, usage = await post_ig(http, graph_emulator, text_body())
        assert status == 200
        assert answer["recipient_id"] == USER
        assert answer["message_id"].startswith("m_")
        ids.add(answer["message_id"])
        parsed = parse_business_usage(usage)
        assert parsed is not None
        assert parsed.regain_seconds == 0
    assert len(ids) == 3
    assert [sent.auth for sent in graph_emulator.state.messages] == ["bearer"] * 3


async def test_me_resolves_the_account_from_the_token(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    """`/me/messages` with an IG user token is recorded under that token's account."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    headers = {"Authorization": f"Bearer {IG_ACCOUNT.token.value}"}
    async with http.post(f"{graph_emulator.base_url}/v25.0/me/messages", json=text_body(), headers=headers) as resp:
        assert resp.status == 200
    assert graph_emulator.state.messages[0].account_id == IG_ACCOUNT.account_id


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_is_error_190(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession, token: str | None
) -> None:
    """A missing or wrong token gets Meta's OAuthException body with code 190."""
    url = f"{graph_emulator.base_url}/v25.0/{IG_ACCOUNT.account_id}/messages"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url, json=text_body(), headers=headers) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == 190
    assert error["type"] == "OAuthException"
    assert error["fbtrace_id"]
    assert graph_emulator.state.messages == []


async def test_page_token_send_with_correct_appsecret_proof(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    """A Page-token send with the right appsecret_proof is accepted and recorded as such."""
    graph_emulator.open_window(IGFB_ACCOUNT.account_id, USER)
    assert IGFB_ACCOUNT.app_secret is not None
    proof = appsecret_proof(IGFB_ACCOUNT.token.value, IGFB_ACCOUNT.app_secret.value)
    status, answer = await post_page(
        http, graph_emulator, text_body(messaging_type="RESPONSE"), account=IGFB_ACCOUNT, proof=proof
    )
    assert status == 200, answer
    sent = graph_emulator.state.messages[0]
    assert (sent.auth, sent.appsecret_proof, sent.flavour) == ("access_token", True, "ig_fb")


async def test_wrong_appsecret_proof_is_error_100(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """A wrong appsecret_proof gets code 100 GraphMethodException, as Meta answers."""
    graph_emulator.open_window(IGFB_ACCOUNT.account_id, USER)
    status, answer = await post_page(
        http, graph_emulator, text_body(messaging_type="RESPONSE"), account=IGFB_ACCOUNT, proof="0" * 64
    )
    assert status == 400
    assert answer["error"]["code"] == 100
    assert answer["error"]["type"] == "GraphMethodException"
    assert "appsecret_proof" in answer["error"]["message"]


async def test_required_appsecret_proof(start_graph_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    """With require_appsecret_proof, a Page-token call without a proof is refused."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS, require_appsecret_proof=True))
    emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    status, answer = await post_page(http, emulator, text_body(messaging_type="RESPONSE"))
    assert status == 400
    assert answer["error"]["code"] == 100


@pytest.mark.parametrize(
    ("body", "expected_code", "expected_subcode"),
    [
        ({"message": {"text": "hi"}, "messaging_type": "RESPONSE"}, 100, None),
        (text_body(), 100, None),  # messaging_type missing on a Page token
        (text_body("x" * 2001, messaging_type="RESPONSE"), 100, None),
        (
            {
                "recipient": {"id": USER},
                "messaging_type": "RESPONSE",
                "message": {
                    "text": "pick",
                    "quick_replies": [{"content_type": "text", "title": f"t{i}", "payload": "p"} for i in range(14)],
                },
            },
            100,
            None,
        ),
        (text_body(messaging_type="MESSAGE_TAG"), 100, None),  # a tag is required
    ],
    ids=["no-recipient", "no-messaging-type", "text-2001-chars", "14-quick-replies", "tag-missing"],
)
async def test_messenger_validation(
    graph_emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    expected_code: int,
    expected_subcode: int | None,
) -> None:
    """Invalid Messenger requests get Meta's invalid-parameter errors."""
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    status, answer = await post_page(http, graph_emulator, body)
    assert status == 400
    assert answer["error"]["code"] == expected_code
    assert answer["error"].get("error_subcode") == expected_subcode
    assert graph_emulator.state.messages == []


async def test_messenger_accepts_2000_characters(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """Messenger counts characters: 2000 multibyte characters pass."""
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    status, _ = await post_page(http, graph_emulator, text_body("ä" * 2000, messaging_type="RESPONSE"))
    assert status == 200


async def test_ig_text_limit_counts_bytes(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """IG-IG counts UTF-8 bytes: 500 two-byte characters pass, 501 get 100/2534015."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    status, _, _ = await post_ig(http, graph_emulator, text_body("é" * 500))
    assert status == 200
    status, answer, _ = await post_ig(http, graph_emulator, text_body("é" * 501))
    assert status == 400
    assert (answer["error"]["code"], answer["error"]["error_subcode"]) == (100, 2534015)


async def test_sender_action_must_be_alone(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """A sender action is accepted alone and refused together with a message."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    status, answer, _ = await post_ig(http, graph_emulator, {"recipient": {"id": USER}, "sender_action": "typing_on"})
    assert status == 200
    assert "message_id" not in answer
    status, answer, _ = await post_ig(
        http, graph_emulator, {"recipient": {"id": USER}, "sender_action": "typing_on", "message": {"text": "x"}}
    )
    assert status == 400
    assert answer["error"]["code"] == 100


@pytest.mark.parametrize(
    ("account", "subcode"), [(IG_ACCOUNT, 2534022), (IGFB_ACCOUNT, 2534022), (MESSENGER_ACCOUNT, 2018278)]
)
async def test_window_closed_without_recent_inbound(
    graph_emulator: RunningEmulator, http: aiohttp.ClientSession, account: Any, subcode: int
) -> None:
    """No inbound message within 24 h gets code 10 with the flavour's subcode."""
    graph_emulator.open_window(account.account_id, USER, age_seconds=25 * 3600)
    if account is IG_ACCOUNT:
        status, answer, _ = await post_ig(http, graph_emulator, text_body())
    else:
        status, answer = await post_page(http, graph_emulator, text_body(messaging_type="RESPONSE"), account=account)
    assert status == 400
    assert (answer["error"]["code"], answer["error"]["error_subcode"]) == (10, subcode)


async def test_inbound_endpoint_opens_the_window(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """POST /_emulator/inbound opens the window for that user only."""
    async with http.post(
        f"{graph_emulator.base_url}/_emulator/inbound",
        json={"account_id": IG_ACCOUNT.account_id, "user_id": USER},
    ) as response:
        assert response.status == 200
    status, _, _ = await post_ig(http, graph_emulator, text_body())
    assert status == 200
    status, answer, _ = await post_ig(http, graph_emulator, {"recipient": {"id": "other"}, "message": {"text": "x"}})
    assert status == 400
    assert answer["error"]["code"] == 10


async def test_human_agent_tag_extends_the_window(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """HUMAN_AGENT is allowed 3 days after the user's message, a RESPONSE is not."""
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER, age_seconds=3 * 24 * 3600)
    status, _ = await post_page(http, graph_emulator, text_body(messaging_type="RESPONSE"))
    assert status == 400
    status, _ = await post_page(http, graph_emulator, text_body(messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT"))
    assert status == 200


async def test_window_check_can_be_disabled(start_graph_emulator: StartEmulator, http: aiohttp.ClientSession) -> None:
    """With enforce_window off, sends without any inbound are accepted."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS, enforce_window=False))
    status, _, _ = await post_ig(http, emulator, text_body())
    assert status == 200


async def test_rate_limit_answers_meta_error_and_usage_header(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """Past the per-second rate the emulator answers code 4 (IG) with a usage header at 100 %."""
    emulator = await start_graph_emulator(
        EmulatorConfig(accounts=TEST_ACCOUNTS, enforce_window=False, ig_rate_per_second=3)
    )
    statuses = []
    last: dict[str, Any] = {}
    usage = None
    for _ in range(4):
        status, last, usage = await post_ig(http, emulator, text_body())
        statuses.append(status)
    assert statuses == [200, 200, 200, 400]
    assert last["error"]["code"] == 4
    parsed = parse_business_usage(usage)
    assert parsed is not None
    assert parsed.max_usage_percent == 100


async def test_injected_failures_then_success(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """POST /_emulator/failures makes the next `count` sends of that account fail, then sends succeed."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    async with http.post(
        f"{graph_emulator.base_url}/_emulator/failures",
        json={"account_id": IG_ACCOUNT.account_id, "code": 2, "http_status": 500, "count": 2},
    ) as response:
        assert response.status == 200
    # Another account is not affected.
    status, _ = await post_page(http, graph_emulator, text_body(messaging_type="RESPONSE"))
    assert status == 200
    results = [await post_ig(http, graph_emulator, text_body()) for _ in range(3)]
    assert [status for status, _, _ in results] == [500, 500, 200]
    assert results[0][1]["error"]["code"] == 2


async def test_injected_delay(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """A failure with only delay_seconds delays the send, which then succeeds."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    graph_emulator.fail_next(delay_seconds=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await post_ig(http, graph_emulator, text_body())
    assert status == 200
    assert loop.time() - started >= 0.3


async def test_messages_listing_and_clearing(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """GET /_emulator/messages lists accepted sends with their bodies; DELETE clears them."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    _, answer, _ = await post_ig(http, graph_emulator, text_body("listed"))
    async with http.get(f"{graph_emulator.base_url}/_emulator/messages") as response:
        listed = await response.json()
    assert len(listed) == 1
    assert listed[0]["message_id"] == answer["message_id"]
    assert listed[0]["body"]["message"]["text"] == "listed"
    assert (listed[0]["account_id"], listed[0]["flavour"], listed[0]["recipient_id"]) == (
        IG_ACCOUNT.account_id,
        "ig_ig",
        USER,
    )
    async with http.delete(f"{graph_emulator.base_url}/_emulator/messages") as response:
        assert response.status == 200
    async with http.get(f"{graph_emulator.base_url}/_emulator/messages") as response:
        assert await response.json() == []


async def test_messages_listing_waits_for_a_send(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """?recipient=&since=&wait= answers as soon as a matching send arrives, and [] once the wait is over."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    since = int(time.time() * 1000)
    url = f"{graph_emulator.base_url}/_emulator/messages"
    waiting = asyncio.ensure_future(http.get(url, params={"recipient": USER, "since": str(since), "wait": "10"}))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = time.monotonic()
    await post_ig(http, graph_emulator, text_body("awaited"))
    async with await waiting as response:
        listed = await response.json()
    assert time.monotonic() - started < 2
    assert [sent["body"]["message"]["text"] for sent in listed] == ["awaited"]
    later = int(time.time() * 1000) + 1
    async with http.get(url, params={"since": str(later), "wait": "0.3"}) as response:
        assert await response.json() == []
    async with http.get(url, params={"recipient": "someone-else"}) as response:
        assert await response.json() == []
    async with http.get(url, params={"wait": "soon"}) as response:
        assert response.status == 400


async def test_stats_count_every_accepted_send(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """GET /_emulator/stats counts accepted sends past the listing's limit, with the first and last times."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS, enforce_window=False, max_records=2))
    async with http.get(f"{emulator.base_url}/_emulator/stats") as response:
        assert await response.json() == {
            "accepted": 0,
            "first_accepted_at": None,
            "last_accepted_at": None,
            "answers_lost": 0,
            "echoes_delivered": 0,
            "echoes_failed": 0,
        }
    for n in range(3):
        status, _, _ = await post_ig(http, emulator, text_body(f"reply {n}"))
        assert status == 200
    status, _, _ = await post_ig(http, emulator, text_body(), token="wrong-token")
    assert status == 400
    async with http.get(f"{emulator.base_url}/_emulator/stats") as response:
        stats = await response.json()
    listed = emulator.state.messages
    assert stats["accepted"] == 3
    assert len(listed) == 2
    assert stats["first_accepted_at"] <= listed[0].time <= listed[-1].time == stats["last_accepted_at"]
    async with http.delete(f"{emulator.base_url}/_emulator/messages") as response:
        assert response.status == 200
    async with http.get(f"{emulator.base_url}/_emulator/stats") as response:
        assert (await response.json())["accepted"] == 0


async def test_unknown_accounts_accepted_without_configuration(
    start_graph_emulator: StartEmulator, http: aiohttp.ClientSession
) -> None:
    """With no accounts configured any non-empty token works; a missing one still gets 190."""
    emulator = await start_graph_emulator(EmulatorConfig(enforce_window=False))
    status, _, _ = await post_ig(http, emulator, text_body(), token="anything")
    assert status == 200
    async with http.post(f"{emulator.base_url}/v25.0/123/messages", json=text_body()) as response:
        assert (await response.json())["error"]["code"] == 190


def test_command_help_says_local_only() -> None:
    """`igw graph-emulator` is registered and its help says it is a local stand-in, not a production path."""
    parser = build_parser()
    args = parser.parse_args(["graph-emulator", "--port", "9999", "--no-window"])
    assert (args.host, args.port, args.no_window, args.func) == ("127.0.0.1", 9999, True, emulator_command.run)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = " ".join(subparsers.choices["graph-emulator"].format_help().split())
    assert "not Meta" in help_text
    assert "production" in help_text


def test_command_sets_rates_and_listing_size() -> None:
    """--rate-ig, --rate-page and --max-records reach the emulator's config; Meta's rates are the defaults."""
    parser = build_parser()
    args = parser.parse_args(["graph-emulator", "--rate-ig", "5000", "--rate-page", "7000", "--max-records", "50000"])
    config = emulator_command.build_config(args)
    assert (config.ig_rate_per_second, config.page_rate_per_second, config.max_records) == (5000, 7000, 50000)
    defaults = emulator_command.build_config(parser.parse_args(["graph-emulator"]))
    assert (defaults.ig_rate_per_second, defaults.page_rate_per_second, defaults.max_records) == (100, 300, 10_000)
    with pytest.raises(SystemExit):
        parser.parse_args(["graph-emulator", "--rate-ig", "0"])


def test_command_reads_accounts_file(tmp_path: Path) -> None:
    """--accounts-file gives the emulator the accounts and tokens to check."""
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"account_id": "42", "flavour": "messenger", "token": "t-42", "app_secret": "s"}]))
    args = argparse.Namespace(accounts_file=path, no_window=False, require_appsecret_proof=False, inbound_grace=0.0)
    config = emulator_command.build_config(args)
    assert [(a.account_id, a.flavour, a.token.value) for a in config.accounts] == [("42", "messenger", "t-42")]


async def test_form_encoded_body(graph_emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    """Meta's form encoding (JSON-valued fields) and curl-style JSON labelled as a form are both read."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    url = f"{graph_emulator.base_url}/v25.0/{IG_ACCOUNT.account_id}/messages"
    headers = {"Authorization": f"Bearer {IG_ACCOUNT.token.value}"}
    form = {"recipient": json.dumps({"id": USER}), "message": json.dumps({"text": "form"})}
    async with http.post(url, data=form, headers=headers) as response:
        assert response.status == 200
    curl_style = json.dumps(text_body("curl")).encode()
    form_headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    async with http.post(url, data=curl_style, headers=form_headers) as response:
        assert response.status == 200
    assert [sent.body["message"]["text"] for sent in graph_emulator.state.messages] == ["form", "curl"]


async def test_command_serves_the_emulator(http: aiohttp.ClientSession) -> None:
    """`igw graph-emulator` starts a server that the Send API client can use, and stops on SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "igw_tools.cli",
        "graph-emulator",
        "--port",
        str(port),
        "--no-window",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                async with http.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "emulator did not start within 15 s"
            await asyncio.sleep(0.1)
        settings = SendApiSettings(
            accounts=(AccountConfig("me", Flavour.IG_IG, Secret("cli-token")),),
            graph_base_url=base_url,
            instagram_base_url=base_url,
        )
        async with SendApiClient(settings) as client:
            [result] = await client.send("me", OutboundMessage(USER, "via the command"))
        assert result.message_id.startswith("m_")
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert b"not Meta" in stderr
    assert b"cli-token" not in stderr
