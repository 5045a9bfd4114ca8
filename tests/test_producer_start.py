"""A broker that refuses idempotent producers is named as such, with the setting to change."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaProducer

from gateway.publisher import AiokafkaPublisher
from igw.config import KafkaSettings
from igw.errors import IdempotenceRefused, SettingsError
from igw.producers import start_producer
from igw.topics import TOPIC_NAMES, ensure_topics
from igw_tools.localbroker import LocalBroker


@pytest.fixture
def idempotent(kafka_broker: LocalBroker | None, kafka_settings: KafkaSettings) -> KafkaSettings:
    """The suite's Tansu broker (which has no idempotent producers) with idempotence asked for."""
    if kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external broker, which may well support idempotence")
    return dataclasses.replace(kafka_settings, enable_idempotence=True)


@pytest.mark.kafka
async def test_start_producer_names_the_setting(idempotent: KafkaSettings) -> None:
    """The producer's start fails with IdempotenceRefused, a settings error naming KAFKA_ENABLE_IDEMPOTENCE."""
    producer = AIOKafkaProducer(enable_idempotence=True, **idempotent.client_kwargs())
    with pytest.raises(IdempotenceRefused) as caught:
        await start_producer(producer, idempotent)
    assert isinstance(caught.value, SettingsError)
    assert caught.value.variable == "KAFKA_ENABLE_IDEMPOTENCE"
    assert "refused an idempotent producer" in str(caught.value)
    assert "KAFKA_ENABLE_IDEMPOTENCE=false" in caught.value.remedy
    assert idempotent.bootstrap_servers in str(caught.value)


@pytest.mark.kafka
async def test_gateway_logs_the_refusal_not_an_unreachable_broker(
    idempotent: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway says the broker refused idempotence, not "not reachable ... Check KAFKA_BOOTSTRAP_SERVERS"."""
    caplog.set_level(logging.WARNING, logger="gateway.publisher")
    publisher = AiokafkaPublisher(idempotent, reconnect_interval=0.1)
    try:
        await publisher.start(wait=0.5)
        assert not publisher.connected
    finally:
        await publisher.stop()
    messages = [record.getMessage() for record in caplog.records]
    assert any("KAFKA_ENABLE_IDEMPOTENCE=false" in m for m in messages), messages
    assert not any("not reachable" in m or "Check KAFKA_BOOTSTRAP_SERVERS" in m for m in messages), messages


@pytest.mark.kafka
async def test_replay_exits_2_with_one_line(idempotent: KafkaSettings) -> None:
    """`igw replay` against such a broker exits 2 with one line naming the setting, no traceback."""
    plain = dataclasses.replace(idempotent, enable_idempotence=False)
    await ensure_topics(plain, TOPIC_NAMES)
    producer = AIOKafkaProducer(enable_idempotence=False, **plain.client_kwargs())
    await producer.start()
    try:  # something to replay, so that replay starts its producer
        await producer.send_and_wait(plain.topic("messages"), b"{}", key=b"k")
    finally:
        await producer.stop()
    environ = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": idempotent.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "true",
        "IGW_TOPIC_PREFIX": idempotent.topic_prefix,
    }
    result = subprocess.run(
        [sys.executable, "-m", "igw_tools.cli", "replay", "messages", "--to", "events", "--timeout", "20"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("igw replay:")]
    assert len(lines) == 1, result.stderr
    assert "KAFKA_ENABLE_IDEMPOTENCE=false" in lines[0]
    assert "Traceback" not in result.stderr
