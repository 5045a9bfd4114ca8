"""No automatic reply outside the 24 h window: old events and Meta's window errors are skipped, not retried."""

from __future__ import annotations

import time

import orjson
import pytest

from igw.config import KafkaSettings
from igw_tools.graph_emulator import InjectedFailure
from tests.plugins.agent import Emulator, StartAgent, envelope, publish
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.kafka


async def test_event_older_than_the_window_is_skipped(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """A message from 25 hours ago (a new group reading old events) is recorded as window_closed and not sent."""
    await start_agent()
    old = envelope("old-user", "hello", timestamp_ms=int((time.time() - 25 * 3600) * 1000))
    fresh = envelope("new-user", "hello")
    await publish(kafka_settings, [old, fresh])
    records = await topic_reader(kafka_settings.topic("replies"), expect=2, settle=0.3)
    outcome = {orjson.loads(r.value)["user_id"]: orjson.loads(r.value) for r in records}
    assert (outcome["old-user"]["outcome"], outcome["old-user"]["reason"]) == ("skipped", "window_closed")
    assert outcome["old-user"]["latency_ms"] >= 25 * 3600 * 1000
    assert (outcome["new-user"]["outcome"], outcome["new-user"]["reason"]) == ("sent", "replied")
    assert [s.recipient_id for s in agent_emulator.replies()] == ["new-user"]


async def test_meta_window_error_is_final(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """Meta's "outside of allowed window" (10/2534022) is recorded as window_closed after one call, no retry."""
    await start_agent()
    agent_emulator.state.inject(InjectedFailure(count=1, code=10, subcode=2534022))
    await publish(kafka_settings, [envelope("closed", "hello")])
    records = await topic_reader(kafka_settings.topic("replies"), expect=1, settle=0.5)
    body = orjson.loads(records[0].value)
    assert (body["outcome"], body["reason"], body["error_code"]) == ("skipped", "window_closed", 10)
    assert len(agent_emulator.state.calls) == 1
    assert agent_emulator.replies() == []
