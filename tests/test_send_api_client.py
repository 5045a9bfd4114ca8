"""The Send API client against the Graph API emulator over HTTP: request shapes, splitting, retries, errors."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.send_api.client import (
    AccountConfig,
    Flavour,
    OutboundMessage,
    QuickReply,
    SendApiClient,
    SendError,
    appsecret_proof,
)
from consumers.send_api.errors import ErrorClass
from consumers.send_api.metrics import SendApiMetrics
from consumers.send_api.ratelimit import LocalRateLimiter
from consumers.send_api.settings import SendApiSettings
from igw.config import Env, Secret
from tests.plugins.graph_emulator import IG_ACCOUNT, IGFB_ACCOUNT, MESSENGER_ACCOUNT, RunningEmulator

USER = "6600000000000001"
ALL_ACCOUNTS = [IG_ACCOUNT, IGFB_ACCOUNT, MESSENGER_ACCOUNT]
ClientFactory = Callable[..., Any]


# The clients of make_client count into these metrics (as the agent's client counts into its /metrics).
REGISTRY = CollectorRegistry()
METRICS = SendApiMetrics(REGISTRY)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def make_client(graph_emulator: RunningEmulator) -> AsyncIterator[ClientFactory]:
    """Build started clients aimed at the emulator; all are closed after the test."""
    clients: list[SendApiClient] = []

    async def make(**overrides: Any) -> SendApiClient:
        accounts = overrides.pop("accounts", None)
        client = SendApiClient(graph_emulator.client_settings(**overrides), accounts=accounts, metrics=METRICS)
        await client.start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> SendApiClient:
    made: SendApiClient = await make_client()
    return made


@pytest.fixture(autouse=True)
def open_windows(graph_emulator: RunningEmulator) -> None:
    for account in ALL_ACCOUNTS:
        graph_emulator.open_window(account.account_id, USER)


async def test_ig_ig_request_shape(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """IG-IG posts to /{version}/{ig id}/messages with a Bearer token and no messaging_type or proof."""
    [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "hi there"))
    [sent] = graph_emulator.state.messages
    assert (sent.auth, sent.appsecret_proof, sent.version, sent.flavour) == ("bearer", False, "v25.0", "ig_ig")
    assert sent.body == {"recipient": {"id": USER}, "message": {"text": "hi there"}}
    assert (result.message_id, result.recipient_id, result.attempts) == (sent.message_id, USER, 1)


@pytest.mark.parametrize("account", [IGFB_ACCOUNT, MESSENGER_ACCOUNT], ids=["ig_fb", "messenger"])
async def test_page_token_request_shape(
    graph_emulator: RunningEmulator, client: SendApiClient, account: AccountConfig
) -> None:
    """Page-token flavours use access_token, a valid appsecret_proof (checked by the emulator) and messaging_type."""
    await client.send(account.account_id, OutboundMessage(USER, "hello"))
    [sent] = graph_emulator.state.messages
    assert (sent.auth, sent.appsecret_proof, sent.flavour) == ("access_token", True, account.flavour.value)
    assert sent.body == {"recipient": {"id": USER}, "message": {"text": "hello"}, "messaging_type": "RESPONSE"}


async def test_tag_sends_message_tag(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """A tag turns messaging_type into MESSAGE_TAG with the tag alongside."""
    await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "agent here", tag="HUMAN_AGENT"))
    body = graph_emulator.state.messages[0].body
    assert (body["messaging_type"], body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


def test_appsecret_proof_is_hmac_sha256_hex() -> None:
    """appsecret_proof is HMAC-SHA256 of the token keyed with the app secret, in hex (RFC 4231 case 2)."""
    proof = appsecret_proof(token="what do ya want for nothing?", app_secret="Jefe")
    assert proof == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


async def test_wrong_app_secret_is_a_credential_error(
    graph_emulator: RunningEmulator, make_client: ClientFactory
) -> None:
    """A wrong app secret gives Meta's appsecret_proof error, classed as a token problem and not retried."""
    wrong = AccountConfig(IGFB_ACCOUNT.account_id, Flavour.IG_FB, IGFB_ACCOUNT.token, Secret("not-the-secret"))
    client = await make_client(accounts=[wrong])
    with pytest.raises(SendError) as caught:
        await client.send(wrong.account_id, OutboundMessage(USER, "x"))
    assert (caught.value.error_class, caught.value.code, caught.value.attempts) == (ErrorClass.TOKEN_INVALID, 100, 1)


async def test_ig_splits_by_utf8_bytes(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """A 2,600-byte multibyte IG-IG reply goes out as parts of at most 1000 bytes, in order."""
    sentence = "Grüße aus Köln — ça va? 👋🏽 "
    text = (sentence * 100).strip()
    assert len(text.encode()) > 2600
    results = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, text))
    texts = [sent.body["message"]["text"] for sent in graph_emulator.state.messages]
    assert len(results) == len(texts) >= 3
    assert all(len(part.encode()) <= 1000 for part in texts)
    assert " ".join(texts).split() == text.split()
    assert len({result.message_id for result in results}) == len(results)


async def test_messenger_splits_by_characters(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """A 4,500-character Messenger reply goes out as three parts of at most 2000 characters."""
    text = ("Ünïcödé wörds here. " * 225).strip()
    await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, text))
    texts = [sent.body["message"]["text"] for sent in graph_emulator.state.messages]
    assert len(texts) == 3
    assert all(len(part) <= 2000 for part in texts)
    assert any(len(part.encode()) > 2000 for part in texts)  # characters counted, not bytes
    assert " ".join(texts).split() == text.split()


async def test_quick_replies_limited_and_on_last_part(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """15 quick replies become 13 with titles trimmed to 20 characters, on the last part only."""
    replies = tuple(QuickReply(f"Option number {i} with a long title", f"P{i}") for i in range(15))
    text = "word " * 450  # over 2000 characters: two parts
    await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, text, quick_replies=replies))
    first, last = (sent.body["message"] for sent in graph_emulator.state.messages)
    assert "quick_replies" not in first
    assert len(last["quick_replies"]) == 13
    assert all(len(reply["title"]) <= 20 for reply in last["quick_replies"])
    assert last["quick_replies"][0] == {"content_type": "text", "title": "Option number 0 with", "payload": "P0"}


async def test_empty_message_is_invalid(client: SendApiClient) -> None:
    """A message without text is refused locally as INVALID_MESSAGE."""
    with pytest.raises(SendError) as caught:
        await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "   "))
    assert caught.value.error_class is ErrorClass.INVALID_MESSAGE


async def test_sender_action_alone(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """typing_on goes alone in its request; unknown actions are refused before any call."""
    await client.sender_action(MESSENGER_ACCOUNT.account_id, USER, "typing_on")
    [sent] = graph_emulator.state.messages
    assert sent.body == {"recipient": {"id": USER}, "sender_action": "typing_on"}
    with pytest.raises(ValueError, match="sender_action"):
        await client.sender_action(MESSENGER_ACCOUNT.account_id, USER, "dance")


@pytest.mark.parametrize(
    ("code", "subcode", "http_status", "expected", "retried"),
    [
        (1, None, 500, ErrorClass.TRANSIENT, True),
        (2, None, 500, ErrorClass.TRANSIENT, True),
        (4, None, 400, ErrorClass.RATE_LIMITED, True),
        (613, None, 400, ErrorClass.RATE_LIMITED, True),
        (80006, None, 400, ErrorClass.RATE_LIMITED, True),
        (10, 2534022, 400, ErrorClass.WINDOW_CLOSED, False),
        (100, 2534014, 400, ErrorClass.USER_UNAVAILABLE, False),
        (551, None, 400, ErrorClass.USER_UNAVAILABLE, False),
        (100, 2534015, 400, ErrorClass.INVALID_MESSAGE, False),
        (190, 460, 400, ErrorClass.TOKEN_INVALID, False),
        (200, 2534041, 400, ErrorClass.ACCOUNT_BLOCKED, False),
        (100, 2534037, 400, ErrorClass.THREAD_OWNED, False),
        (10, 2018300, 400, ErrorClass.THREAD_OWNED, False),
        (12345, None, 400, ErrorClass.UNKNOWN, False),
    ],
)
async def test_error_classes_from_injected_failures(
    graph_emulator: RunningEmulator,
    client: SendApiClient,
    code: int,
    subcode: int | None,
    http_status: int,
    expected: ErrorClass,
    retried: bool,
) -> None:
    """Each injected Meta error is classified; retriable ones are retried and succeed, others fail at once."""
    graph_emulator.fail_next(2, code=code, subcode=subcode, http_status=http_status, account_id=IG_ACCOUNT.account_id)
    retries_before = sample("igw_send_api_retries_total", error_class=expected.value)
    if retried:
        [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
        assert result.attempts == 3
        assert sample("igw_send_api_retries_total", error_class=expected.value) - retries_before == 2
    else:
        with pytest.raises(SendError) as caught:
            await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
        err = caught.value
        assert (err.error_class, err.code, err.subcode, err.http_status) == (expected, code, subcode, http_status)
        assert err.attempts == 1
        assert not err.retriable
        assert err.fbtrace_id
    assert len(graph_emulator.state.calls) == (3 if retried else 1)


async def test_retries_are_bounded(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """A transient error that persists stops after max_attempts (4) with the attempts counted."""
    graph_emulator.fail_next(10, code=2, http_status=500)
    with pytest.raises(SendError) as caught:
        await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert (caught.value.error_class, caught.value.attempts) == (ErrorClass.TRANSIENT, 4)
    assert len(graph_emulator.state.calls) == 4


async def test_bare_429_is_rate_limited_and_retried(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """An HTTP 429 without Meta's body is treated as rate limiting and retried."""
    graph_emulator.fail_next(1, http_status=429)
    errors_before = sample("igw_send_api_errors_total", error_class="rate_limited", code="other")
    [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert result.attempts == 2
    assert sample("igw_send_api_errors_total", error_class="rate_limited", code="other") - errors_before == 1


async def test_bare_503_is_transient(graph_emulator: RunningEmulator, make_client: ClientFactory) -> None:
    """An HTTP 503 without a body is TRANSIENT; with one attempt allowed it is raised."""
    client = await make_client(max_attempts=1)
    graph_emulator.fail_next(1, http_status=503)
    with pytest.raises(SendError) as caught:
        await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert (caught.value.error_class, caught.value.http_status, caught.value.retriable) == (
        ErrorClass.TRANSIENT,
        503,
        True,
    )


async def test_timeout_is_transient_and_retried(graph_emulator: RunningEmulator, make_client: ClientFactory) -> None:
    """A call slower than the timeout is abandoned and retried."""
    client = await make_client(timeout_seconds=0.3)
    graph_emulator.fail_next(1, delay_seconds=1.0)
    [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert result.attempts == 2


async def test_window_closed_not_retried(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """A user without an inbound message in 24 h gives WINDOW_CLOSED after one call."""
    with pytest.raises(SendError) as caught:
        await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage("7700000000000009", "late"))
    assert (caught.value.error_class, caught.value.subcode, caught.value.attempts) == (
        ErrorClass.WINDOW_CLOSED,
        2018278,
        1,
    )


async def test_token_invalid_and_token_never_shown(
    graph_emulator: RunningEmulator, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token gives TOKEN_INVALID; neither token nor app secret appear in logs or the exception."""
    caplog.set_level(logging.DEBUG)
    bad_token = "EAAG-very-secret-wrong-token-9999"
    secret = "app-secret-never-shown"
    accounts = [
        AccountConfig(IG_ACCOUNT.account_id, Flavour.IG_IG, Secret(bad_token)),
        AccountConfig(MESSENGER_ACCOUNT.account_id, Flavour.MESSENGER, Secret(bad_token), Secret(secret)),
    ]
    client = await make_client(accounts=accounts)
    texts = []
    for account in accounts:
        with pytest.raises(SendError) as caught:
            await client.send(account.account_id, OutboundMessage(USER, "x"))
        assert caught.value.error_class is ErrorClass.TOKEN_INVALID
        texts += [str(caught.value), repr(caught.value), caught.value.meta_message]
    # Meta echoes malformed tokens in some messages: the client must scrub them too.
    good = await make_client()
    graph_emulator.fail_next(1, code=190, message=f"Malformed access token {IG_ACCOUNT.token.value}")
    with pytest.raises(SendError) as caught:
        await good.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    texts.append(str(caught.value))
    # Transport errors (whose text holds the URL with access_token) are scrubbed as well.
    graph_emulator.fail_next(5, delay_seconds=1.0)
    slow = await make_client(timeout_seconds=0.2, max_attempts=2)
    with pytest.raises(SendError) as caught:
        await slow.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    texts.append(str(caught.value))
    assert caught.value.error_class is ErrorClass.TRANSIENT
    assert any(record.name == "consumers.send_api.client" for record in caplog.records)
    assert any(record.name == "aiohttp.access" for record in caplog.records)
    everything = caplog.text + "\n".join(texts)
    for value in (bad_token, secret, IG_ACCOUNT.token.value, MESSENGER_ACCOUNT.token.value):
        assert value not in everything
    assert "***" in texts[-2]


async def test_usage_header_blocks_the_account(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """estimated_time_to_regain_access (minutes) in X-Business-Use-Case-Usage delays the retry that long."""
    graph_emulator.fail_next(1, code=4, regain_minutes=0.02)  # 1.2 s
    waited_before = sample("igw_send_api_rate_limited_seconds_total", flavour="ig_ig")
    started = time.monotonic()
    [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert time.monotonic() - started >= 1.1
    assert result.attempts == 2
    assert sample("igw_send_api_rate_limited_seconds_total", flavour="ig_ig") - waited_before >= 1.0


async def test_repeated_usage_header_still_blocks_when_it_changes(
    graph_emulator: RunningEmulator, client: SendApiClient
) -> None:
    """The usage header, reused while it repeats, still blocks the account as soon as it announces a wait."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    for n in range(3):  # the same "all fine" header each time
        await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, f"ok {n}"))
    graph_emulator.fail_next(1, code=4, regain_minutes=0.02)  # 1.2 s
    started = time.monotonic()
    [result] = await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert time.monotonic() - started >= 1.1
    assert result.attempts == 2


async def test_long_block_fails_fast_without_calling_meta(
    graph_emulator: RunningEmulator, make_client: ClientFactory
) -> None:
    """A block longer than the retry budget raises RATE_LIMITED with retry_after, and later sends make no call."""
    client = await make_client(max_retry_seconds=2.0)
    graph_emulator.fail_next(1, code=613, regain_minutes=1, account_id=MESSENGER_ACCOUNT.account_id)
    with pytest.raises(SendError) as caught:
        await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.retry_after == pytest.approx(60.0)
    calls = len(graph_emulator.state.calls)
    with pytest.raises(SendError) as caught:
        await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "again"))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    assert caught.value.attempts == 0
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 50
    assert len(graph_emulator.state.calls) == calls
    # Other accounts are not blocked.
    await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "fine"))


async def test_metrics_count_requests_and_errors(graph_emulator: RunningEmulator, client: SendApiClient) -> None:
    """Requests are counted by flavour and outcome, errors by class and known code."""
    ok_before = sample("igw_send_api_requests_total", flavour="messenger", outcome="ok")
    err_before = sample("igw_send_api_requests_total", flavour="messenger", outcome="error")
    code_before = sample("igw_send_api_errors_total", error_class="user_unavailable", code="551")
    other_before = sample("igw_send_api_errors_total", error_class="unknown", code="other")
    count_before = sample("igw_send_api_duration_seconds_count", flavour="messenger")
    await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    graph_emulator.fail_next(1, code=551)
    graph_emulator.fail_next(1, code=424242)
    for _ in range(2):
        with pytest.raises(SendError):
            await client.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "x"))
    assert sample("igw_send_api_requests_total", flavour="messenger", outcome="ok") - ok_before == 1
    assert sample("igw_send_api_requests_total", flavour="messenger", outcome="error") - err_before == 2
    assert sample("igw_send_api_errors_total", error_class="user_unavailable", code="551") - code_before == 1
    assert sample("igw_send_api_errors_total", error_class="unknown", code="other") - other_before == 1
    assert sample("igw_send_api_duration_seconds_count", flavour="messenger") - count_before == 3


async def test_single_token_setup_sends_as_me(graph_emulator: RunningEmulator) -> None:
    """IGW_ACCESS_TOKEN alone configures one IG-IG account addressed as `me`, whatever id the caller uses."""
    settings = SendApiSettings.from_env(
        Env(
            {
                "IGW_ACCESS_TOKEN": IG_ACCOUNT.token.value,
                "IGW_GRAPH_BASE_URL": graph_emulator.base_url,
                "IGW_INSTAGRAM_GRAPH_BASE_URL": graph_emulator.base_url,
            }
        )
    )
    async with SendApiClient(settings, limiter=LocalRateLimiter()) as client:
        await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, "from me"))
    [sent] = graph_emulator.state.messages
    assert (sent.account_id, sent.auth) == (IG_ACCOUNT.account_id, "bearer")


async def test_unknown_account_is_refused(client: SendApiClient) -> None:
    """Sending from an account that is not configured raises without any call."""
    with pytest.raises(SendError, match="no account"):
        await client.send("999", OutboundMessage(USER, "x"))
