"""Each Send API error class leads to the documented outcome: retried, final, dead-lettered or account paused."""

from __future__ import annotations

import logging

import orjson
import pytest

from igw.config import KafkaSettings
from igw_tools.graph_emulator import InjectedFailure
from tests.plugins.agent import Emulator, StartAgent, envelope, publish
from tests.plugins.graph_emulator import IG_ACCOUNT
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.kafka


async def outcome(topic_reader: TopicReader, kafka: KafkaSettings, expect: int = 1) -> list[dict[str, object]]:
    records = await topic_reader(kafka.topic("replies"), expect=expect, settle=0.3)
    # Offsets order records within one partition only: order by user, then offset.
    bodies = [(orjson.loads(r.value), r.offset) for r in records]
    return [body for body, _ in sorted(bodies, key=lambda pair: (str(pair[0]["user_id"]), pair[1]))]


@pytest.mark.parametrize(
    ("failures", "code", "subcode", "http_status"),
    [
        (1, 2, None, 500),  # transient: the event is tried again after a short backoff
        (3, 2, None, 500),  # transient, three times in a row
        (3, 4, None, 400),  # rate limited, the same way
        (3, 613, None, 400),  # rate limited (Page token code)
    ],
)
async def test_retriable_errors_end_in_one_reply(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    failures: int,
    code: int | None,
    subcode: int | None,
    http_status: int,
) -> None:
    """Retriable failures are retried (by the client, then later by the consumer) until one reply goes out."""
    await start_agent()
    agent_emulator.state.inject(InjectedFailure(count=failures, code=code, subcode=subcode, http_status=http_status))
    await publish(kafka_settings, [envelope("retry", "hello")])
    [body] = await outcome(topic_reader, kafka_settings)
    assert (body["outcome"], body["reason"]) == ("sent", "replied")
    assert len(agent_emulator.replies()) == 1
    assert len(agent_emulator.state.calls) == failures + 1


async def test_retries_run_out_then_failed_and_dead_lettered(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """When Meta keeps failing, the event is retried a bounded number of times, then failed and dead-lettered."""
    await start_agent({"IGW_AGENT_MAX_RETRIES": "2"})
    agent_emulator.state.inject(InjectedFailure(count=100, code=1, http_status=500))
    event = envelope("doomed", "hello")
    await publish(kafka_settings, [event])
    [body] = await outcome(topic_reader, kafka_settings)
    assert (body["outcome"], body["reason"]) == ("failed", "send_failed")
    # 3 tries of the event (first + 2 retries), one HTTP call each: one layer owns the retries.
    assert len(agent_emulator.state.calls) == 3
    [dead] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert orjson.loads(dead.value)["id"] == event["id"]
    assert dead.headers["igw_reason"] == b"send_failed"
    assert dead.headers["igw_event_id"] == event["id"].encode()


@pytest.mark.parametrize(
    ("code", "subcode", "reason", "dead_lettered"),
    [
        (551, None, "user_unavailable", False),
        (100, 2534014, "user_unavailable", False),
        (100, 2534037, "thread_owned", False),
        (100, 2534015, "invalid_message", True),
        (12345, None, "send_error", True),
    ],
)
async def test_final_errors_are_recorded_once(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    code: int,
    subcode: int | None,
    reason: str,
    dead_lettered: bool,
) -> None:
    """User, thread-owner and invalid-message errors are final: one call, a failed record, dead-lettered if useful."""
    await start_agent()
    agent_emulator.state.inject(InjectedFailure(count=1, code=code, subcode=subcode))
    await publish(kafka_settings, [envelope("final", "hello")])
    [body] = await outcome(topic_reader, kafka_settings)
    assert (body["outcome"], body["reason"], body["error_code"]) == ("failed", reason, code)
    assert len(agent_emulator.state.calls) == 1
    dead = await topic_reader(kafka_settings.topic("deadletter"), expect=1, timeout=1.0 if not dead_lettered else 15.0)
    assert len(dead) == (1 if dead_lettered else 0)


@pytest.mark.parametrize(
    ("code", "subcode", "reason"), [(190, 460, "token_invalid"), (200, 2534041, "account_blocked")]
)
async def test_token_or_account_error_pauses_the_account(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    caplog: pytest.LogCaptureFixture,
    code: int,
    subcode: int,
    reason: str,
) -> None:
    """A bad token or blocked account pauses the account with an operator WARNING; later events are dead-lettered."""
    caplog.set_level(logging.WARNING, logger="consumers.agent_replies.processor")
    agent = await start_agent()
    agent_emulator.state.inject(InjectedFailure(count=1, code=code, subcode=subcode))
    await publish(kafka_settings, [envelope("first", "hello")])
    await outcome(topic_reader, kafka_settings)
    await publish(kafka_settings, [envelope("second", "hello")])
    bodies = await outcome(topic_reader, kafka_settings, expect=2)
    assert [(b["user_id"], b["outcome"], b["reason"]) for b in bodies] == [
        ("first", "failed", reason),
        ("second", "skipped", "account_paused"),
    ]
    assert len(agent_emulator.state.calls) == 1
    dead = await topic_reader(kafka_settings.topic("deadletter"), expect=2)
    assert sorted(d.headers["igw_reason"] for d in dead) == sorted([reason.encode(), b"account_paused"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "paused" in r.getMessage()]
    assert warnings
    assert IG_ACCOUNT.token.value not in caplog.text
    assert agent.sample("igw_agent_paused_accounts") == 1
