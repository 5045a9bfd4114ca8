"""The reply state machine under faults injected at every step: never twice, never lost.

A hypothesis state machine drives :class:`ReplyProcessor` over an in-process store that fails on
demand (before a call runs, or after it ran: the answer lost), a fake Meta that refuses, drops
connections, accepts and loses the answer, or times out without accepting, an agent and a
dead-letter topic that fail, echoes delivered late or never, and crashes (the processor and its
memory gone, the store kept, unfinished records replayed). After every step: no part of a reply
reached the user twice unless its earlier send's echo had not arrived when it was sent again
(the one case docs/agent.md allows). At the end, with the faults healed: every reply complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from prometheus_client import CollectorRegistry

from consumers.agent_replies.agent import AgentError
from consumers.agent_replies.job import Job, Phase
from consumers.agent_replies.leases import LeaseKeeper, StoreHealth
from consumers.agent_replies.ledger import Step, parse_echo_token
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import AgentReply, InboundEvent, Turn
from consumers.agent_replies.outcomes import Outcome, Reason, ReplyRecord
from consumers.agent_replies.processor import ReplyProcessor
from consumers.agent_replies.settings import AgentSettings
from consumers.agent_replies.store import MemoryStore, StoreUnavailable
from consumers.common.runner import OffsetTracker
from consumers.common.settings import ConsumerSettings
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import OutboundMessage, SendResult

TP = TopicPartition("t.messages", 0)
ACCOUNT = "17841400000000001"
LEASE = 15.0
# Longer than a lease, as by default: a reply taken over after a crash still waits for its echo.
ECHO_WAIT = 20.0
STORE_CALLS = ("begin", "save", "finish", "peek", "release", "witness")
META_FAULTS = ("refused", "rate_limited", "no_connection", "answer_lost", "echo_then_answer_lost", "timeout_not_taken")
# Every fault the machine can inject: the store failing a call (before it runs, or after: the
# answer lost), Meta's answers, the agent, the dead-letter topic.
FAULTS = (
    *(("store", f"{call}:{when}") for call in STORE_CALLS for when in ("before", "after")),
    # Meta's faults twice over: they are the ones that may leave a message with the user.
    *(("meta", fault) for fault in META_FAULTS * 2),
    ("agent", "down"),
    ("deadletter", "refused"),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class FaultyStore(MemoryStore):
    """The in-process store, failing its next call of a kind: before it runs, or after (the answer lost)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.faults: dict[str, str] = {}

    def _fault(self, name: str) -> str | None:
        return self.faults.pop(name, None)

    async def _call(self, name: str, call: Any) -> Any:
        fault = self._fault(name)
        if fault == "before":
            call.close()
            raise StoreUnavailable(f"{name}: refused")
        result = await call
        if fault == "after":
            raise StoreUnavailable(f"{name}: answer lost")
        return result

    async def begin(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("begin", super().begin(*args, **kwargs))

    async def save(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("save", super().save(*args, **kwargs))

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("finish", super().finish(*args, **kwargs))

    async def peek(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("peek", super().peek(*args, **kwargs))

    async def release(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("release", super().release(*args, **kwargs))

    async def witness(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("witness", super().witness(*args, **kwargs))


@dataclass
class Delivery:
    mid: str
    at: float
    echo_seen: bool = False


@dataclass
class FakeMeta:
    """Meta's side: what reached each user (per event and part), and the echoes it owes the agent."""

    clock: Clock
    faults: list[str] = field(default_factory=list)
    delivered: dict[tuple[str, int], list[Delivery]] = field(default_factory=dict)
    echoes: list[tuple[InboundEvent, Delivery]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Delivers an echo to the agent at once (Meta's webhook may beat its own HTTP answer).
    echo_now: Callable[[InboundEvent, Delivery], Awaitable[None]] | None = None
    sent = 0

    def parts(self, account_id: str, message: OutboundMessage) -> list[OutboundMessage]:
        texts = (message.text or "").split("|")
        return [OutboundMessage(message.recipient_id, text) for text in texts]

    async def send_once(self, account_id: str, part: OutboundMessage) -> SendResult:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "refused":
            raise SendError(ErrorClass.TRANSIENT, code=2, http_status=500)
        if fault == "rate_limited":
            raise SendError(ErrorClass.RATE_LIMITED, code=4, http_status=400, retry_after=0.0)
        if fault == "no_connection":
            raise SendError(ErrorClass.TRANSIENT, meta_message="no answer from Meta: ClientConnectorError")
        if fault == "timeout_not_taken":
            raise SendError(ErrorClass.TRANSIENT, meta_message="no answer from Meta: timed out", ambiguous=True)
        token = parse_echo_token(part.metadata)
        assert token is not None
        earlier = self.delivered.setdefault(token, [])
        # Sent again only once its echo had every chance: none arrived, and the echo wait passed.
        if any(d.echo_seen for d in earlier):
            self.violations.append(f"{token} sent again although its echo had arrived")
        if any(self.clock() - d.at < ECHO_WAIT for d in earlier):
            self.violations.append(f"{token} sent again before the echo wait ended")
        self.sent += 1
        delivery = Delivery(f"m_{self.sent}", self.clock())
        earlier.append(delivery)
        event_id = token[0]
        platform = "messenger" if event_id.startswith("msgr") else "instagram"
        echo = InboundEvent(
            id=f"echo-{delivery.mid}",
            type="message_echo",
            platform=platform,
            account_id=account_id,
            user_id=part.recipient_id,
            conversation_id=f"{platform}:{account_id}:{part.recipient_id}",
            timestamp_ms=int(self.clock() * 1000),
            mid=delivery.mid,
            text=part.text,
            # Meta passes the metadata back on Messenger only.
            metadata=part.metadata if platform == "messenger" else None,
            is_echo=True,
        )
        if fault == "echo_then_answer_lost" and self.echo_now is not None:
            await self.echo_now(echo, delivery)
        else:
            self.echoes.append((echo, delivery))
        if fault in ("answer_lost", "echo_then_answer_lost"):
            raise SendError(ErrorClass.TRANSIENT, meta_message="no answer from Meta: timed out", ambiguous=True)
        return SendResult(delivery.mid, part.recipient_id, 1)


class FakeAgent:
    name = "fake"
    uses_history = False

    def __init__(self) -> None:
        self.failures = 0

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        if self.failures:
            self.failures -= 1
            raise AgentError("the agent is down")
        # Two parts for some events: a part may be in flight while the other is sent. Texts differ
        # from event to event: Instagram echoes are told apart by text (docs/agent.md).
        text = f"answer to {event.text}"
        return AgentReply(text=f"{text}|second part of {event.id}" if event.id.endswith("2") else text)

    async def close(self) -> None:
        return None


class FakePublisher:
    def __init__(self) -> None:
        self.records: list[ReplyRecord] = []
        self.deadletter_failures = 0

    async def record(self, record: ReplyRecord) -> None:
        self.records.append(record)

    async def deadletter(self, *args: Any, **kwargs: Any) -> bool:
        if self.deadletter_failures:
            self.deadletter_failures -= 1
            return False
        return True


def inbound(event_id: str, user: str, platform: str, clock: Clock) -> InboundEvent:
    return InboundEvent(
        id=event_id,
        type="message",
        platform=platform,
        account_id=ACCOUNT,
        user_id=user,
        conversation_id=f"{platform}:{ACCOUNT}:{user}",
        timestamp_ms=int(clock() * 1000),
        mid=f"mid-{event_id}",
        text=f"question {event_id}",
        sender_id=user,
    )


class ReplyLifeUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.store = FaultyStore(self.clock)
        self.meta = FakeMeta(self.clock)
        self.agent = FakeAgent()
        self.publisher = FakePublisher()
        self.tracker = OffsetTracker()
        self.offset = 0
        self.crashes = 0
        self.events: dict[str, InboundEvent] = {}
        self.jobs: list[Job] = []
        self.settings = AgentSettings(
            consumer=ConsumerSettings(group_id="g", topics=()),
            lease_seconds=LEASE,
            echo_wait_seconds=ECHO_WAIT,
            max_retries=10_000,
            retry_base_seconds=0.01,
            retry_max_seconds=0.05,
            owner_id="replica-0",
        )
        self.processor = self._processor()
        self.meta.echo_now = self._echo_now

    async def _echo_now(self, echo: InboundEvent, delivery: Delivery) -> None:
        job = self._job(echo)
        await self.processor.handle(job)
        if job.phase is Phase.FINISHED:
            delivery.echo_seen = True
            job.ticket.finish()
        else:
            self.meta.echoes.append((echo, delivery))
            job.ticket.finish()

    def _processor(self) -> ReplyProcessor:
        self.settings = dataclasses.replace(self.settings, owner_id=f"replica-{self.crashes}")
        metrics = AgentMetrics(CollectorRegistry())
        health = StoreHealth(self.store.ping, metrics, interval=0.0005, max_interval=0.0005)
        leases = LeaseKeeper(self.store, self.settings.owner_id, LEASE, health, metrics)
        return ReplyProcessor(
            self.settings,
            self.store,
            self.agent,
            self.meta,
            self.publisher,  # type: ignore[arg-type]
            metrics=metrics,
            health=health,
            leases=leases,
            clock=self.clock,
        )

    def _job(self, event: InboundEvent) -> Job:
        ticket = self.tracker.track(TP, self.offset)
        self.offset += 1
        return self.processor.job(event, ticket, b"{}", b"k", (TP.topic, TP.partition, ticket.offset))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _handle(self, job: Job) -> None:
        await self.processor.handle(job)
        await asyncio.sleep(0.001)  # lets the store probe see the store answer again

    def teardown(self) -> None:
        try:
            self.finish_everything()
        finally:
            self.run(self.processor.health.close())
            self.loop.close()

    # -- what happens ------------------------------------------------------------------------

    @initialize()
    def two_messages_wait(self) -> None:
        self.message_arrives("instagram", same_user=False)
        self.message_arrives("messenger", same_user=False)

    @rule(platform=st.sampled_from(["instagram", "messenger"]), same_user=st.booleans())
    def message_arrives(self, platform: str, same_user: bool) -> None:
        n = len(self.events)
        prefix = "msgr" if platform == "messenger" else "ig"
        event = inbound(f"{prefix}{n}", "user-a" if same_user else f"user-{n}", platform, self.clock)
        self.events[event.id] = event
        self.jobs.append(self._job(event))

    @rule(data=st.data())
    def a_job_runs(self, data: st.DataObject) -> None:
        pending = [job for job in self.jobs if job.phase is not Phase.FINISHED]
        if pending:
            self.run(self._handle(data.draw(st.sampled_from(pending))))

    @rule(data=st.data(), fault=st.sampled_from(FAULTS))
    def a_job_runs_into_a_fault(self, data: st.DataObject, fault: tuple[str, str]) -> None:
        """The next call of a kind fails (whichever step the job is at), then the job runs."""
        where, what = fault
        if where == "store":
            call, when = what.split(":")
            self.store.faults[call] = when
        elif where == "meta":
            self.meta.faults.append(what)
        elif where == "agent":
            self.agent.failures += 1
        else:
            self.publisher.deadletter_failures += 1
        self.a_job_runs(data)

    @rule(drop=st.booleans())
    def an_echo_arrives_or_is_lost(self, drop: bool) -> None:
        if not self.meta.echoes:
            return
        echo, delivery = self.meta.echoes.pop(0)
        if drop:
            return  # never delivered: a resend of its part is allowed from now on
        job = self._job(echo)
        self.jobs.append(job)
        self.run(self._handle(job))
        if job.phase is Phase.FINISHED:
            delivery.echo_seen = True
        else:
            self.meta.echoes.insert(0, (echo, delivery))
            self.jobs.remove(job)
            job.ticket.finish()

    @rule(seconds=st.sampled_from([0.5, 2.0, 8.0, 16.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.run(self.processor.leases.renew_now())

    @rule()
    def the_agent_crashes_and_restarts(self) -> None:
        """The process dies: its memory is gone, the store stays; unfinished records are replayed."""
        self.run(self.processor.health.close())
        self.crashes += 1
        self.processor = self._processor()
        self.jobs = [self._job(job.event) for job in self.jobs if job.phase is not Phase.FINISHED]

    @rule()
    def the_agent_crashes_and_its_leases_run_out(self) -> None:
        """A crash, then a restart once the dead process's leases ended: its replies are taken over."""
        self.the_agent_crashes_and_restarts()
        self.time_passes(LEASE + 1)

    # -- what must hold ----------------------------------------------------------------------

    @invariant()
    def nothing_sent_twice_while_its_echo_was_known(self) -> None:
        assert not self.meta.violations, self.meta.violations

    @invariant()
    def no_internal_errors(self) -> None:
        assert all(record.reason is not Reason.INTERNAL_ERROR for record in self.publisher.records)

    def finish_everything(self) -> None:
        """Faults healed and every echo delivered: every reply completes, each part reached the user."""
        self.store.faults.clear()
        self.meta.faults.clear()
        self.agent.failures = 0
        self.publisher.deadletter_failures = 0
        for _ in range(200):
            while self.meta.echoes:
                self.an_echo_arrives_or_is_lost(drop=False)
            pending = [job for job in self.jobs if job.phase is not Phase.FINISHED]
            if not pending:
                break
            for job in pending:
                self.run(self._handle(job))
            self.time_passes(1.0)
        assert all(job.phase is Phase.FINISHED for job in self.jobs), [(j.event.id, j.phase) for j in self.jobs]
        assert not self.meta.violations, self.meta.violations
        for event_id in self.events:
            entry, _ = self.run(self.store.peek(event_id))
            assert entry is not None
            assert entry.step is Step.DONE, (event_id, entry)
            assert entry.outcome == Outcome.SENT
            parts = 2 if event_id.endswith("2") else 1
            assert len(entry.mids) == parts
            for part in range(parts):
                delivered = {d.mid for d in self.meta.delivered[(event_id, part)]}
                assert entry.mids[part] in delivered
        sent = Counter(r.event.id for r in self.publisher.records if r.outcome is Outcome.SENT)
        assert set(sent) == set(self.events)


ReplyLifeUnderFaults.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_reply_life_under_faults = ReplyLifeUnderFaults.TestCase


def _machine() -> ReplyLifeUnderFaults:
    machine = ReplyLifeUnderFaults()
    machine.message_arrives("instagram", same_user=False)
    return machine


def _deliveries(machine: ReplyLifeUnderFaults) -> int:
    return sum(len(deliveries) for deliveries in machine.meta.delivered.values())


def test_an_echo_during_the_retry_wait_stops_the_resend() -> None:
    """A part about to be sent again (no echo in time, then the store failed) is not sent once its echo arrives."""
    machine = _machine()
    job = machine.jobs[0]
    try:
        machine.meta.faults.append("answer_lost")
        machine.run(machine._handle(job))
        assert job.phase is Phase.CONFIRM
        machine.time_passes(ECHO_WAIT + 1)
        machine.store.faults["save"] = "before"
        machine.run(machine._handle(job))
        assert job.phase is Phase.SEND
        machine.an_echo_arrives_or_is_lost(drop=False)
        machine.run(machine._handle(job))
        assert job.phase is Phase.FINISHED
        assert _deliveries(machine) == 1
    finally:
        machine.teardown()


def test_a_crash_with_a_part_in_flight_waits_for_its_echo() -> None:
    """Taken over after a crash, a part that may have been sent is not sent again before the echo wait ends."""
    machine = _machine()
    job = machine.jobs[0]
    try:
        machine.meta.faults.append("answer_lost")
        machine.run(machine._handle(job))
        machine.the_agent_crashes_and_its_leases_run_out()
        resumed = machine.jobs[0]
        machine.run(machine._handle(resumed))
        assert resumed.phase is Phase.CONFIRM
        assert _deliveries(machine) == 1
        machine.an_echo_arrives_or_is_lost(drop=False)
        machine.run(machine._handle(resumed))
        assert resumed.phase is Phase.FINISHED
        assert _deliveries(machine) == 1
    finally:
        machine.teardown()


def test_a_late_echo_after_a_crash_is_not_taken_for_a_person() -> None:
    """The echo of a first try that came after the part was sent again (no echo in time) is ours, not a person's."""
    machine = _machine()
    machine.message_arrives("instagram", same_user=False)
    try:
        machine.meta.faults.append("answer_lost")
        machine.run(machine._handle(machine.jobs[0]))
        machine.the_agent_crashes_and_its_leases_run_out()
        machine.time_passes(ECHO_WAIT)
        for job in machine.jobs:
            machine.run(machine._handle(job))
        assert _deliveries(machine) == 3  # the first event's part twice: its echo never came in time
        machine.the_agent_crashes_and_restarts()
        while machine.meta.echoes:
            machine.an_echo_arrives_or_is_lost(drop=False)
        assert machine.run(machine.store.paused_conversations()) == 0
    finally:
        machine.teardown()
