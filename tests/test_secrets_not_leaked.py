"""No configured secret ever appears in logs, error bodies, metrics or /readyz of a full run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.signature import sign
from igw.config import KafkaSettings
from igw_tools.localbroker import LocalBroker
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, WEBHOOK, dm_body
from tests.plugins.outage import GatewayProcess, gateway_env, signed_poster, wait_for_metric

pytestmark = pytest.mark.kafka

SECOND_SECRET = "rotated-app-secret-5f1e9c"
SASL_PASSWORD = "kafka-sasl-password-77aa01"


async def test_secrets_absent_from_a_full_debug_run(own_broker: LocalBroker, tmp_path: Path) -> None:
    """Debug logs with access lines, handshakes, signed and unsigned posts and a broker outage: no secret shows."""
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="tsecrets")
    env = gateway_env(
        kafka,
        tmp_path / "spool",
        INSTAGRAM_APP_SECRET=f"{APP_SECRET},{SECOND_SECRET}",
        KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        IGW_SPOOL_AFTER_SECONDS="0.5",
    )
    log_path = tmp_path / "gateway.log"
    proc = GatewayProcess(env, log_path, ("--log-level", "debug", "--access-log"))
    proc.start()
    seen: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            base = proc.base_url
            assert await wait_for_metric(session, base, "igw_producer_ready", 1, timeout=20)

            async def get(path: str, **params: str) -> int:
                async with session.get(base + path, params=params) as resp:
                    seen.append(await resp.text())
                    return resp.status

            async def post(body: bytes, headers: dict[str, str]) -> int:
                async with session.post(base + WEBHOOK, data=body, headers=headers) as resp:
                    seen.append(await resp.text())
                    return resp.status

            handshake = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
            assert await get(WEBHOOK, **handshake, **{"hub.verify_token": VERIFY_TOKEN}) == 200
            assert await get(WEBHOOK, **handshake, **{"hub.verify_token": VERIFY_TOKEN + "-wrong"}) == 403
            body = dm_body(mid="secret-check")
            assert await post(body, {"X-Hub-Signature-256": sign(body, APP_SECRET)}) == 200
            assert await post(body, {"X-Hub-Signature-256": sign(body, SECOND_SECRET)}) == 200
            assert await post(body, {"X-Hub-Signature-256": sign(body, "wrong-secret")}) == 403
            assert await post(body, {}) == 403
            assert await post(b"not json", {"X-Hub-Signature-256": sign(b"not json", APP_SECRET)}) == 200

            own_broker.freeze()  # outage: spooling, readiness with Kafka down, error logs
            post_signed = signed_poster(session, base + WEBHOOK)
            during = await asyncio.gather(*(post_signed(f"outage-{i}") for i in range(5)))
            assert {o.status for o in during} == {200}
            await get("/readyz")
            own_broker.thaw()
            assert await wait_for_metric(session, base, "igw_spool_records", 0, timeout=30)
            await get("/readyz")
            await get("/metrics")
            await get("/healthz")
    finally:
        own_broker.thaw()
        proc.stop()
    log_text = log_path.read_text()
    assert "spooling signed bodies" in log_text, "the outage did not happen: the test would prove nothing"
    assert '"level": "debug"' in log_text or '"level":"debug"' in log_text
    everything = log_text + "\n".join(seen)
    for secret in (APP_SECRET, SECOND_SECRET, VERIFY_TOKEN, SASL_PASSWORD):
        assert secret not in everything, f"a configured secret leaked ({len(secret)} characters)"
