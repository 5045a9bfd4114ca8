"""What the agent decides for one event (``ReplyProcessor.handle``), with no broker, Redis or Meta.

The processor gets the in-process store, a scripted agent and sender, and an ``OutcomePublisher``
writing to a list; every test reads the decision from the reply records and dead letters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.agent_replies.agent import AgentError
from consumers.agent_replies.job import Job
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import AgentReply, InboundEvent, Turn, parse_event
from consumers.agent_replies.outcomes import OutcomePublisher
from consumers.agent_replies.processor import ReplyProcessor
from consumers.agent_replies.settings import AgentSettings
from consumers.agent_replies.store import BeginKind, MemoryStore
from consumers.common.runner import OffsetTracker
from consumers.common.settings import ConsumerSettings
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import OutboundMessage, SendResult
from tests.plugins.agent import envelope

NOW = 1_764_000_000.0  # the processor's clock, in seconds
NOW_MS = int(NOW * 1000)
SETTINGS = AgentSettings(
    consumer=ConsumerSettings(group_id="agent", topics=("t.messages",)), max_retries=2, owner_id="me"
)


@dataclass
class Produced:
    """The producer behind ``OutcomePublisher``: the reply records and dead letters it was asked to send."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, bytes]] = field(default_factory=list)  # the headers of each dead letter

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: list[tuple[str, bytes]]
    ) -> None:
        if topic == "replies":
            self.replies.append(orjson.loads(value))
        else:
            assert topic == "deadletter"
            self.dead.append(dict(headers))

    def decisions(self) -> list[tuple[str, str]]:
        return [(body["outcome"], body["reason"]) for body in self.replies]

    def dead_letters(self) -> list[str]:
        return [headers["igw_reason"].decode() for headers in self.dead]


@dataclass
class ScriptedAgent:
    """Answers with ``reply`` unless ``failures`` is non-zero (then raises AgentError, counting down)."""

    reply_with: AgentReply = field(default_factory=lambda: AgentReply(text="Open 9-17."))
    failures: int = 0
    name: str = "scripted"
    uses_history: bool = False

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        if self.failures:
            self.failures -= 1
            raise AgentError("the agent is away")
        return self.reply_with

    async def close(self) -> None:
        return None


@dataclass
class ScriptedSender:
    """One call per part (text split at ``|``): raises the queued errors in turn (None: delivers), then delivers."""

    errors: list[SendError | None] = field(default_factory=list)
    sent: list[OutboundMessage] = field(default_factory=list)

    def parts(self, account_id: str, message: OutboundMessage) -> list[OutboundMessage]:
        return [OutboundMessage(message.recipient_id, text) for text in (message.text or "").split("|")]

    async def send_once(self, account_id: str, part: OutboundMessage) -> SendResult:
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        self.sent.append(part)
        return SendResult(f"m_{len(self.sent)}", part.recipient_id, 1)


@dataclass
class Bench:
    store: MemoryStore
    agent: ScriptedAgent
    sender: ScriptedSender
    produced: Produced
    processor: ReplyProcessor
    tracker: OffsetTracker = field(default_factory=OffsetTracker)
    offsets: int = 0

    def job(self, user_id: str = "u1", *, recovered: dict[str, Any] | None = None, **fields: Any) -> Job:
        """An inbound message from ``user_id``, a second old unless ``timestamp_ms`` says otherwise."""
        doc = envelope(user_id, **{"timestamp_ms": int(NOW * 1000) - 1000, **fields})
        if recovered is not None:
            doc["recovered"] = recovered
        value = orjson.dumps(doc)
        offset = self.offsets
        self.offsets += 1
        ticket = self.tracker.track(TopicPartition("t.messages", 0), offset)
        return self.processor.job(parse_event(value), ticket, value, b"key", ("t.messages", 0, offset))

    async def begin_elsewhere(self, job: Job, lease: float = 30) -> BeginKind:
        """What another replica finds when it takes up ``job``'s event."""
        event = job.event
        begun = await self.store.begin(
            event.id,
            "another-replica",
            lease=lease,
            ttl=3600,
            account_id=event.account_id,
            conversation_id=event.conversation_id or "",
        )
        return begun.kind


@pytest.fixture
def bench() -> Bench:
    store, agent, sender, produced = MemoryStore(clock=lambda: NOW), ScriptedAgent(), ScriptedSender(), Produced()
    metrics = AgentMetrics(CollectorRegistry())
    publisher = OutcomePublisher(produced, "replies", "deadletter", metrics, clock=lambda: NOW)
    processor = ReplyProcessor(SETTINGS, store, agent, sender, publisher, metrics=metrics, clock=lambda: NOW)
    return Bench(store, agent, sender, produced, processor)


async def test_a_message_is_answered_once_and_a_redelivery_is_a_duplicate(bench: Bench) -> None:
    """One reply goes out; the same event again is skipped as a duplicate carrying Meta's message id."""
    job = bench.job()
    assert await bench.processor.handle(job) is None
    assert await bench.processor.handle(bench.job(mid=job.event.mid)) is None
    assert [m.text for m in bench.sender.sent] == ["Open 9-17."]
    assert bench.produced.decisions() == [("sent", "replied"), ("skipped", "duplicate")]
    assert bench.produced.replies[1]["message_ids"] == ["m_1"]


@pytest.mark.parametrize(
    ("fields", "decision", "dead_letter"),
    [
        ({"standby": True}, ("skipped", "standby"), None),
        ({"timestamp_ms": int((NOW - 25 * 3600) * 1000)}, ("skipped", "window_closed"), None),
        ({"user_id": ""}, ("failed", "bad_event"), "bad_event"),
        (
            {"recovered": {"source": "conversations_api", "at": NOW_MS, "answered_at": NOW_MS - 500}},
            ("skipped", "already_answered"),
            None,
        ),
    ],
    ids=["standby", "older-than-the-window", "no-user", "recovered-and-answered-after"],
)
async def test_events_that_are_not_answered(
    bench: Bench, fields: dict[str, Any], decision: tuple[str, str], dead_letter: str | None
) -> None:
    """Standby, a closed window, a message without a user and a recovered message the account answered after
    are decided before the agent is asked, and before the ledger: nothing is claimed."""
    job = bench.job(**fields)
    assert await bench.processor.handle(job) is None
    assert bench.produced.decisions() == [decision]
    assert bench.produced.dead_letters() == ([dead_letter] if dead_letter else [])
    assert bench.sender.sent == []
    assert await bench.begin_elsewhere(job) is BeginKind.CLAIMED


async def test_a_recovered_message_nobody_answered_is_answered_once(bench: Bench) -> None:
    """A message reconcile recovered, with no later message from the account, is answered like a webhook's."""
    recovered = {"source": "conversations_api", "at": NOW_MS, "answered_at": None}
    job = bench.job(recovered=recovered)
    assert await bench.processor.handle(job) is None
    assert await bench.processor.handle(bench.job(recovered=recovered, mid=job.event.mid)) is None
    assert bench.produced.decisions() == [("sent", "replied"), ("skipped", "duplicate")]
    assert len(bench.sender.sent) == 1


async def test_our_own_echo_is_ignored_and_paused_conversations_are_skipped(bench: Bench) -> None:
    """An echo of this app's records nothing; a paused account dead-letters for replay, a paused conversation
    just skips."""
    processor = bench.processor
    processor.settings = dataclasses.replace(SETTINGS, app_id="1517000000000001")
    assert await processor.handle(bench.job(type="message_echo", app_id="1517000000000001")) is None
    assert bench.produced.replies == bench.produced.dead == []
    assert await bench.store.conversation_paused_until(bench.job().event.conversation_id or "") is None
    await bench.store.pause_conversation(bench.job().event.conversation_id or "", NOW + 60)
    await bench.processor.handle(bench.job())
    await bench.store.pause_account(bench.job().event.account_id, NOW + 60)
    await bench.processor.handle(bench.job(user_id="u2"))
    assert bench.produced.decisions() == [("skipped", "human_takeover"), ("skipped", "account_paused")]
    assert bench.produced.dead_letters() == ["account_paused"]
    assert bench.sender.sent == []


async def test_a_claim_held_elsewhere_is_looked_at_again_when_its_lease_ends(bench: Bench) -> None:
    """Another replica is answering: nothing is recorded and the event comes back after the lease."""
    job = bench.job()
    assert await bench.begin_elsewhere(job, lease=10) is BeginKind.CLAIMED
    delay = await bench.processor.handle(job)
    assert delay is not None
    assert 10 <= delay <= SETTINGS.lease_seconds
    assert bench.produced.replies == bench.produced.dead == []


@pytest.mark.parametrize(
    ("error", "decision", "dead_letter"),
    [
        (SendError(ErrorClass.USER_UNAVAILABLE, code=551), ("failed", "user_unavailable"), None),
        (SendError(ErrorClass.THREAD_OWNED, code=100), ("failed", "thread_owned"), None),
        (SendError(ErrorClass.INVALID_MESSAGE, code=100), ("failed", "invalid_message"), "invalid_message"),
        (SendError(ErrorClass.UNKNOWN, code=12345), ("failed", "send_error"), "send_error"),
        (SendError(ErrorClass.WINDOW_CLOSED, code=10), ("skipped", "window_closed"), None),
    ],
    ids=lambda v: v.error_class if isinstance(v, SendError) else None,
)
async def test_final_send_errors_are_recorded_once(
    bench: Bench, error: SendError, decision: tuple[str, str], dead_letter: str | None
) -> None:
    """Meta's final errors end the event: one record, a dead letter where a replay could help, no retry."""
    job = bench.job()
    bench.sender.errors.append(error)
    assert await bench.processor.handle(job) is None
    assert bench.produced.decisions() == [decision]
    assert bench.produced.dead_letters() == ([dead_letter] if dead_letter else [])
    assert await bench.begin_elsewhere(job) is BeginKind.DONE


async def test_a_reply_cut_off_after_its_first_part_is_a_partial_send(bench: Bench) -> None:
    """The first part reached the user, Meta refused the second for good: recorded once, never sent again."""
    bench.agent.reply_with = AgentReply(text="Open 9-17.|Closed on Sundays.")
    job = bench.job()
    bench.sender.errors += [None, SendError(ErrorClass.UNKNOWN, code=12345)]
    assert await bench.processor.handle(job) is None
    assert [m.text for m in bench.sender.sent] == ["Open 9-17."]
    assert bench.produced.decisions() == [("failed", "partial_send")]
    assert bench.produced.dead_letters() == ["partial_send"]
    assert bench.produced.replies[0]["message_ids"] == ["m_1"]
    assert await bench.begin_elsewhere(job) is BeginKind.DONE


@pytest.mark.parametrize("error_class", [ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED])
async def test_token_or_account_errors_pause_the_account_and_keep_the_event_for_replay(
    bench: Bench, error_class: ErrorClass
) -> None:
    """The account is paused, the event is dead-lettered and its claim released, so a replay can answer it."""
    job = bench.job()
    bench.sender.errors.append(SendError(error_class, code=190))
    assert await bench.processor.handle(job) is None
    assert bench.produced.decisions() == [("failed", str(error_class))]
    assert bench.produced.dead_letters() == [str(error_class)]
    assert await bench.store.account_paused_until(job.event.account_id) == NOW + SETTINGS.account_pause_seconds
    # Neither held nor done: a replay takes it up at its step.
    assert await bench.begin_elsewhere(job) is BeginKind.RESUMED


async def test_retriable_failures_come_back_then_fail_for_good(bench: Bench) -> None:
    """Transient send errors and agent errors are retried with a delay, max_retries times, then failed once."""
    job = bench.job()
    bench.sender.errors += [SendError(ErrorClass.TRANSIENT, code=2, retry_after=5.0) for _ in range(3)]
    delays = [await bench.processor.handle(job) for _ in range(3)]
    assert [d is not None for d in delays] == [True, True, False]
    assert all(d >= 5.0 for d in delays[:2] if d is not None)  # Meta's Retry-After is a floor
    assert bench.produced.decisions() == [("failed", "send_failed")]
    assert bench.produced.dead_letters() == ["send_failed"]

    bench.agent.failures = 1
    other = bench.job(user_id="u2")
    assert await bench.processor.handle(other) is not None
    assert await bench.processor.handle(other) is None
    assert bench.produced.decisions()[-1] == ("sent", "replied")


async def test_a_handover_pauses_the_conversation(bench: Bench) -> None:
    """The agent's handover sends its text, records it as a handover and pauses automatic replies there."""
    bench.agent.reply_with = AgentReply(text="A colleague will answer.", handover=True)
    job = bench.job()
    await bench.processor.handle(job)
    assert bench.produced.decisions() == [("sent", "handover")]
    assert job.event.conversation_id is not None
    paused = await bench.store.conversation_paused_until(job.event.conversation_id)
    assert paused == NOW + SETTINGS.handover_pause_seconds
