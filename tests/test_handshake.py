"""Meta's GET verification handshake."""

from __future__ import annotations

import logging

import pytest

from tests.plugins.gateway import VERIFY_TOKEN, WEBHOOK, GatewayClient


async def test_challenge_is_echoed_as_plain_text(memory_gateway_client: GatewayClient) -> None:
    """The right token gets 200, text/plain, and the challenge byte for byte."""
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    resp = await memory_gateway_client.get(WEBHOOK, params=params)
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.read() == b"1158201444"


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "123"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "123"},
        {"hub.mode": "subscribe", "hub.challenge": "123"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
        {},
    ],
)
async def test_anything_else_is_forbidden(memory_gateway_client: GatewayClient, params: dict[str, str]) -> None:
    """A wrong token, wrong mode or a missing parameter gets 403 and no echo."""
    resp = await memory_gateway_client.get(WEBHOOK, params=params)
    assert resp.status == 403
    assert b"123" not in await resp.read()


async def test_token_is_never_logged(memory_gateway_client: GatewayClient, caplog: pytest.LogCaptureFixture) -> None:
    """Success and refusal are logged without the token the caller sent or the configured one."""
    caplog.set_level(logging.DEBUG)
    await memory_gateway_client.get(
        WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"}
    )
    await memory_gateway_client.get(
        WEBHOOK, params={"hub.mode": "subscribe", "hub.verify_token": "guess-xyz", "hub.challenge": "1"}
    )
    assert "verified" in caplog.text
    assert VERIFY_TOKEN not in caplog.text
    assert "guess-xyz" not in caplog.text


async def test_log_lines_carry_a_request_id(
    memory_gateway_client: GatewayClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request's log lines are tied together by its request id, taken from X-Request-Id when sent."""
    from igw.logs import JsonFormatter

    caplog.set_level(logging.INFO)
    await memory_gateway_client.get(
        WEBHOOK,
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "7"},
        headers={"X-Request-Id": "req-abc-123"},
    )
    [record] = [r for r in caplog.records if "verified" in r.getMessage()]
    assert '"request_id":"req-abc-123"' in JsonFormatter().format(record)
