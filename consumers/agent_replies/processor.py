"""A reply's life as one state machine: each step durable, each fault resumed at the step it hit.

A :class:`Job` (one fetched record) moves through these phases; the ledger steps they write are
in consumers/agent_replies/ledger.py, and docs/agent.md has the table of faults.

- ``ADMIT``: filters that need nothing (type, standby, age, a recovered message the account
  answered after), then :meth:`Store.begin`: done already (a duplicate), held by a live lease
  (look again when it ends), paused, a fresh claim (-> ``CHOOSE``) or an entry to resume at its
  step (-> ``CHOOSE``, ``SEND`` or ``CONFIRM``).
- ``CHOOSE``: the agent's answer. It is kept in the ledger with the first part's intent.
- ``SEND``: the ledger first (``sending``: part N is being handed to Meta), then exactly one Send
  API call. Meta's message id -> the next part, or ``RECORD``. Meta refused -> retry later
  (ledger back to ``chosen``) or a final decision. No answer (timeout, connection lost: Meta may
  have the message) -> ``CONFIRM``.
- ``CONFIRM``: Meta echoes every message the app sends. The echo of part N (matched by the
  Messenger metadata token, or on Instagram by recipient and text) counts it as sent; no echo
  within ``IGW_AGENT_ECHO_WAIT_SECONDS`` -> ``SEND`` it again (counted: it may arrive twice).
- ``PUBLISH``: the reply record (before the ledger's done, so that a crash between the two
  publishes it twice, with one id, rather than never).
- ``RECORD``: the ledger's ``done`` with Meta's ids (or the lease released), the history, the
  handover pause. Only these are retried once ids came back: never the send.
- ``DEADLETTER``: the record to the dead-letter topic, until Kafka takes it (nothing is dropped
  silently). Then ``FINISHED``: the offset may be committed.
- ``WITNESS`` (echoes only): an echo of a message the business sent is matched to the part it
  confirms; an echo that is not ours is a person answering, which pauses the conversation.

**One layer owns retries: this one.** The Send API client makes one call per attempt
(``send_once``), the Redis client none, the scheduler only waits the delays returned here.
Faults, and what happens:

- the store unreachable: :class:`StoreHealth` goes down, every job waits at its phase (no store
  call meanwhile) and resumes there once the store answers; never counted against retries;
- the agent or Meta failing (Meta answered): ``IGW_AGENT_MAX_RETRIES`` retries with backoff, then
  a failure recorded and dead-lettered;
- an unexpected error (a bug): the same bounded retries at the phase, then ``internal_error``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from consumers.agent_replies.agent import Agent, AgentError
from consumers.agent_replies.echoes import LocalEchoes, Seen, echo_key
from consumers.agent_replies.job import Decision, Job, LedgerWrite, Phase
from consumers.agent_replies.leases import LeaseKeeper, StoreHealth
from consumers.agent_replies.ledger import Answer, Entry, Step, echo_token, parse_echo_token, text_fingerprint
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import InboundEvent, Turn
from consumers.agent_replies.outcomes import Outcome, OutcomePublisher, Reason, ReplyRecord
from consumers.agent_replies.recovered import RecoveredVerdict, judge
from consumers.agent_replies.scheduler import GiveUp
from consumers.agent_replies.settings import AgentSettings
from consumers.agent_replies.store import BeginKind, SaveResult, Store, StoreUnavailable, Witnessed
from consumers.common.runner import Ticket
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import OutboundMessage, QuickReply, SendResult

__all__ = ["ReplyProcessor", "Sender"]

log = logging.getLogger(__name__)

# What a phase returns: the seconds to wait before the job runs again, or None to go on now.
Wait = float | None

# How often a reply waiting for an echo looks at the ledger.
CONFIRM_POLL_SECONDS = 0.25


class Sender(Protocol):
    def parts(self, account_id: str, message: OutboundMessage) -> list[OutboundMessage]: ...
    async def send_once(self, account_id: str, part: OutboundMessage) -> SendResult: ...


# Phases that call the store: they wait while it is unreachable.
_NEEDS_STORE = frozenset({Phase.ADMIT, Phase.CHOOSE, Phase.SEND, Phase.CONFIRM, Phase.RECORD, Phase.WITNESS})


# The decisions of every answered event, made once.
_SENT_REPLIED = Decision(Outcome.SENT, Reason.REPLIED, LedgerWrite.FINISH, history=True)
_SENT_HANDOVER = Decision(Outcome.SENT, Reason.HANDOVER, LedgerWrite.FINISH, history=True, handover=True)

_FINAL_SEND_ERRORS: dict[ErrorClass, tuple[Reason, bool]] = {
    ErrorClass.USER_UNAVAILABLE: (Reason.USER_UNAVAILABLE, False),
    ErrorClass.THREAD_OWNED: (Reason.THREAD_OWNED, False),
    ErrorClass.INVALID_MESSAGE: (Reason.INVALID_MESSAGE, True),
    ErrorClass.UNKNOWN: (Reason.SEND_ERROR, True),
}


class ReplyProcessor:
    def __init__(
        self,
        settings: AgentSettings,
        store: Store,
        agent: Agent,
        sender: Sender,
        publisher: OutcomePublisher,
        *,
        metrics: AgentMetrics,
        health: StoreHealth | None = None,
        leases: LeaseKeeper | None = None,
        clock: Callable[[], float] = time.time,
        on_pause: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.agent = agent
        self.sender = sender
        self.publisher = publisher
        self.health = health if health is not None else StoreHealth(store.ping, metrics)
        self.leases = (
            leases
            if leases is not None
            else LeaseKeeper(store, settings.owner_id, settings.lease_seconds, self.health, metrics)
        )
        self._clock = clock
        self._on_pause = on_pause
        self._owner = settings.owner_id
        # Only agents that read the conversation's turns pay for keeping them.
        self._history_turns = settings.history_turns if agent.uses_history else 0
        self._call_duration = metrics.agent_call_duration.labels(agent=agent.name)
        self._phases: dict[Phase, Callable[[Job], Awaitable[Wait]]] = {
            Phase.ADMIT: self._admit,
            Phase.CHOOSE: self._choose,
            Phase.SEND: self._send,
            Phase.CONFIRM: self._confirm,
            Phase.RECORD: self._record,
            Phase.PUBLISH: self._publish,
            Phase.DEADLETTER: self._deadletter,
            Phase.WITNESS: self._witness,
        }
        self.echoes = LocalEchoes()

    def job(
        self, event: InboundEvent, ticket: Ticket, value: bytes | None, key: bytes | None, source: tuple[str, int, int]
    ) -> Job:
        return Job(event, ticket, value, key, source, Phase.WITNESS if event.is_echo else Phase.ADMIT)

    def bad_job(
        self,
        event: InboundEvent,
        ticket: Ticket,
        value: bytes | None,
        key: bytes | None,
        source: tuple[str, int, int],
        detail: str,
    ) -> Job:
        """A record that is not a usable envelope: straight to the dead-letter topic."""
        job = Job(event, ticket, value, key, source, Phase.DEADLETTER)
        job.decision = Decision(Outcome.FAILED, Reason.BAD_EVENT, detail=detail, deadletter=True)
        return job

    async def handle(self, job: Job) -> Wait:
        """Move ``job`` on as far as it goes now: None once finished, else the seconds to wait before calling again."""
        while job.phase is not Phase.FINISHED:
            if not self.health.up and job.phase in _NEEDS_STORE:
                return self.health.retry_in()
            try:
                delay = await self._phases[job.phase](job)
            except StoreUnavailable as exc:
                self.health.down(str(exc))
                return self.health.retry_in()
            except (asyncio.CancelledError, GiveUp):
                raise
            except Exception:
                delay = self._unexpected(job)
            if delay is not None:
                return delay
        return None

    # -- ADMIT ------------------------------------------------------------------------------

    async def _admit(self, job: Job) -> Wait:
        event = job.event
        if event.sender_id is not None and event.sender_id == event.account_id:
            job.phase = Phase.FINISHED  # the business's own message: answering it would loop
            return None
        if event.standby:
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.STANDBY))
        if not event.user_id or not event.conversation_id:
            detail = "message without user_id or conversation_id"
            return self._decide(job, Decision(Outcome.FAILED, Reason.BAD_EVENT, detail=detail, deadletter=True))
        settings = self.settings
        now = self._clock()
        if now * 1000 - event.timestamp_ms > settings.window_seconds * 1000:
            detail = "older than the reply window"
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.WINDOW_CLOSED, detail=detail))
        if judge(event.envelope, event.timestamp_ms, now, settings.window_seconds) is RecoveredVerdict.ALREADY_ANSWERED:
            # Recovered by reconcile, and the account wrote after it (consumers/agent_replies/recovered.py).
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.ALREADY_ANSWERED, detail="answered after it"))
        begin = await self.store.begin(
            event.id,
            self._owner,
            lease=settings.lease_seconds,
            ttl=settings.ledger_ttl_seconds,
            account_id=event.account_id,
            conversation_id=event.conversation_id,
        )
        if begin.kind is BeginKind.CLAIMED:
            self.leases.hold(event.id, job.ticket)
            job.phase = Phase.CHOOSE
            return None
        if begin.kind is BeginKind.HELD:
            # Someone else is answering it, or died doing so: look again when the lease ends.
            self.metrics.retries.labels(reason="lease_held").inc()
            return min(settings.lease_seconds, begin.retry_after + 0.05 + random.random() * 0.1)  # noqa: S311
        if begin.kind is BeginKind.DONE:
            self.metrics.ledger_hits.inc()
            job.mids = list(begin.entry.mids) if begin.entry is not None else []
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.DUPLICATE))
        if begin.kind is BeginKind.PAUSED:
            if begin.account_paused:
                detail = "the account is paused after a token or account error"
                return self._decide(
                    job, Decision(Outcome.SKIPPED, Reason.ACCOUNT_PAUSED, detail=detail, deadletter=True)
                )
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.HUMAN_TAKEOVER, history=True))
        assert begin.entry is not None
        return self._resume(job, begin.entry, begin.now)

    def _resume(self, job: Job, entry: Entry, now: float) -> Wait:
        """Go on from the ledger's step: the answer is not asked again, a sent part is not sent again."""
        self.metrics.resumed.labels(step=str(entry.step)).inc()
        self.leases.hold(job.event.id, job.ticket)
        job.answer = entry.answer
        job.mids = list(entry.mids)
        if entry.step is Step.CLAIMED or entry.answer is None:
            job.phase = Phase.CHOOSE
        elif entry.step is Step.CHOSEN:
            job.phase = Phase.SEND
        elif entry.echoed:
            self.metrics.ambiguous_sends.labels(resolution="echo_confirmed").inc()
            self._part_sent(job, entry.echoed)
        else:
            # A part was handed to Meta and nobody knows whether it arrived: ask its echo first.
            log.info("event %s: part %d may have been sent before; looking for its echo", job.event.id, entry.cursor)
            self._watch(job, entry.cursor)
            job.confirm_until = entry.intent_at + self.settings.echo_wait_seconds
            job.phase = Phase.CONFIRM
        return None

    # -- CHOOSE -----------------------------------------------------------------------------

    async def _choose(self, job: Job) -> Wait:
        event = job.event
        assert event.conversation_id is not None
        assert event.user_id is not None
        history = await self.store.history(event.conversation_id, self._history_turns) if self._history_turns else []
        started = time.perf_counter()
        try:
            # A timeout scope, not wait_for: no task per call, and an agent that answers at once
            # (the rules agent) runs without giving up the event loop.
            async with asyncio.timeout(self.settings.agent_timeout_seconds):
                reply = await self.agent.reply(event, history)
        except (AgentError, TimeoutError) as exc:
            return self._retry_later(job, Reason.AGENT_ERROR, str(exc) or "the agent did not answer in time")
        finally:
            self._call_duration.observe(time.perf_counter() - started)
        if reply.is_empty:
            return self._decide(job, Decision(Outcome.SKIPPED, Reason.NO_REPLY, LedgerWrite.FINISH, history=True))
        if not reply.text:
            job.answer = Answer((), (), handover=True)
            decision = Decision(Outcome.SKIPPED, Reason.HANDOVER, LedgerWrite.FINISH, history=True, handover=True)
            return self._decide(job, decision)
        quick_replies = tuple(QuickReply(b.title, b.payload) for b in reply.quick_replies)
        message = OutboundMessage(event.user_id, reply.text, quick_replies)
        try:
            parts = self.sender.parts(event.account_id, message)
        except SendError as err:
            return await self._refused(job, err)
        job.answer = Answer(tuple(part.text or "" for part in parts), quick_replies, reply.handover)
        job.phase = Phase.SEND
        return None

    # -- SEND and CONFIRM -------------------------------------------------------------------

    def _watch(self, job: Job, part: int) -> None:
        """Expect the echo of ``part`` until it is known sent (and, on Instagram, index it in the store)."""
        assert job.answer is not None
        key, member = echo_key(job.event, part, job.answer.parts[part])
        if job.watch_key != key:
            job.pending = member
        self.echoes.watch(job, key)

    def _index(self, job: Job) -> tuple[str, str] | None:
        event = job.event
        if event.platform == "messenger" or event.user_id is None:
            return None
        return event.account_id, event.user_id

    async def _send(self, job: Job) -> Wait:
        event = job.event
        answer = job.answer
        assert answer is not None
        assert event.user_id is not None
        part_no = len(job.mids)
        self._watch(job, part_no)
        if job.echoed is not None:
            # An earlier try of this part did arrive (its echo came while this one waited): not again.
            return self._confirmed(job, job.echoed)
        settings = self.settings
        # The intent first: should this process die with the call in flight, whoever takes over
        # knows a part may have reached the user and asks for its echo before sending it again.
        saved = await self.store.save(
            event.id,
            self._owner,
            Entry(Step.SENDING, answer, tuple(job.mids) if job.mids else ()),
            lease=settings.lease_seconds,
            ttl=settings.ledger_ttl_seconds,
            index=self._index(job),
            add=job.pending,
            # The part sent last is ours from now on, even should this process die before done.
            ours=(job.mids[-1],) if job.mids else (),
        )
        if saved.result is SaveResult.LOST or saved.result is SaveResult.DONE:
            return self._lost(job)
        if saved.result is SaveResult.ECHOED:
            assert saved.echoed is not None
            return self._confirmed(job, saved.echoed)
        last = part_no == len(answer.parts) - 1
        part = OutboundMessage(
            event.user_id,
            answer.parts[part_no],
            answer.quick_replies if last else (),
            metadata=echo_token(event.id, part_no),
        )
        try:
            result = await self.sender.send_once(event.account_id, part)
        except SendError as err:
            if err.ambiguous:
                log.info("event %s: no answer from Meta for part %d (%s); waiting for its echo", event.id, part_no, err)
                job.confirm_until = saved.now + settings.echo_wait_seconds
                job.phase = Phase.CONFIRM
                return None
            return await self._refused(job, err)
        if job.resent and job.echoed is not None and job.echoed != result.message_id:
            # The echo of the earlier try came while this one was on its way: the user has both.
            self.metrics.ambiguous_sends.labels(resolution="late_echo").inc()
            log.warning("event %s: part %d reached the user twice (its echo came too late)", event.id, part_no)
        self._part_sent(job, result.message_id)
        return None

    def _part_sent(self, job: Job, mid: str) -> None:
        """Meta has the part (its id came back, or its echo did): the next part, or record the reply."""
        job.mids.append(mid)
        self.echoes.unwatch(job)
        job.pending = None
        job.resent = False
        self.echoes.sent(mid)
        answer = job.answer
        assert answer is not None
        if len(job.mids) < len(answer.parts):
            job.phase = Phase.SEND
            return
        self._decide(job, _SENT_HANDOVER if answer.handover else _SENT_REPLIED)

    async def _confirm(self, job: Job) -> Wait:
        if job.echoed is not None:
            return self._confirmed(job, job.echoed)
        entry, now = await self.store.peek(job.event.id)
        if entry is not None:
            if entry.step is Step.DONE:
                return self._lost(job)  # another worker finished it meanwhile
            if entry.cursor == len(job.mids) and entry.echoed:
                return self._confirmed(job, entry.echoed)
        if job.echoed is not None:
            return self._confirmed(job, job.echoed)
        if now < job.confirm_until:
            return min(CONFIRM_POLL_SECONDS, job.confirm_until - now)
        # No echo: most likely Meta never took it. Sent again; should its echo come after all, before
        # the new try goes out, that try is not made (the job still watches for it).
        self.metrics.ambiguous_sends.labels(resolution="resent").inc()
        if job.watch_key is not None:
            self.echoes.resent(job.watch_key)
        job.resent = True
        log.warning(
            "event %s: no echo of part %d within %.0f s; sending it again",
            job.event.id,
            len(job.mids),
            self.settings.echo_wait_seconds,
        )
        job.attempts += 1
        if job.attempts > self.settings.max_retries:
            # Not known to be unsent: finish it rather than let a replay repeat it.
            detail = "no answer from Meta and no echo, after every retry"
            return self._decide(job, Decision(Outcome.FAILED, Reason.SEND_FAILED, LedgerWrite.FINISH, detail=detail))
        job.phase = Phase.SEND
        return None

    def _confirmed(self, job: Job, mid: str) -> Wait:
        self.metrics.ambiguous_sends.labels(resolution="echo_confirmed").inc()
        log.info("event %s: Meta's echo shows part %d arrived; not sent again", job.event.id, len(job.mids))
        self._part_sent(job, mid)
        return None

    def _lost(self, job: Job) -> Wait:
        """Another worker holds the event now (or finished it): start over from the ledger."""
        self.metrics.leases_lost.inc()
        self.echoes.unwatch(job)
        self.leases.let_go(job.event.id)
        job.phase = Phase.ADMIT
        return None

    async def _refused(self, job: Job, err: SendError) -> Wait:
        """Meta answered with an error (or the request never left): the part was not sent."""
        event = job.event
        settings = self.settings
        if err.retriable:
            if job.answer is not None:
                # Nothing in flight while it waits: a takeover need not look for an echo.
                await self.store.save(
                    event.id,
                    self._owner,
                    Entry(Step.CHOSEN, job.answer, tuple(job.mids)),
                    lease=settings.lease_seconds,
                    ttl=settings.ledger_ttl_seconds,
                )
                job.phase = Phase.SEND
            return self._retry_later(
                job, Reason.SEND_FAILED, str(err), min_delay=err.retry_after or 0.0, error_code=err.code
            )
        if job.mids:
            # Part of a long reply reached the user: recorded as such, never repeated.
            decision = Decision(
                Outcome.FAILED, Reason.PARTIAL_SEND, LedgerWrite.FINISH, str(err), err.code, deadletter=True
            )
            return self._decide(job, decision)
        if err.error_class is ErrorClass.WINDOW_CLOSED:
            return self._decide(
                job, Decision(Outcome.SKIPPED, Reason.WINDOW_CLOSED, LedgerWrite.FINISH, str(err), err.code)
            )
        if err.error_class in (ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED):
            await self._pause_account(event, err)
            reason = Reason.TOKEN_INVALID if err.error_class is ErrorClass.TOKEN_INVALID else Reason.ACCOUNT_BLOCKED
            # Not answered: released, so that a replay from the dead-letter topic can answer it.
            return self._decide(
                job, Decision(Outcome.FAILED, reason, LedgerWrite.RELEASE, str(err), err.code, deadletter=True)
            )
        reason, dead_letter = _FINAL_SEND_ERRORS.get(err.error_class, (Reason.SEND_ERROR, True))
        return self._decide(
            job, Decision(Outcome.FAILED, reason, LedgerWrite.FINISH, str(err), err.code, deadletter=dead_letter)
        )

    async def _pause_account(self, event: InboundEvent, err: SendError) -> None:
        settings = self.settings
        await self.store.pause_account(event.account_id, self._clock() + settings.account_pause_seconds)
        action = (
            "renew the account's access token and update IGW_ACCESS_TOKEN or IGW_ACCOUNTS_FILE"
            if err.error_class is ErrorClass.TOKEN_INVALID
            else "check the account in Meta's dashboards (messaging disabled or blocked from the API)"
        )
        log.warning(
            "account %s paused for %.0f s after %s (code %s): %s; then restart igw agent or wait for the "
            "pause to end. Events meanwhile go to the dead-letter topic for replay.",
            event.account_id,
            settings.account_pause_seconds,
            err.error_class,
            err.code,
            action,
        )
        if self._on_pause is not None:
            self._on_pause()

    # -- retries ----------------------------------------------------------------------------

    def _retry_later(
        self, job: Job, reason: Reason, detail: str, *, min_delay: float = 0.0, error_code: int | None = None
    ) -> Wait:
        """The agent or Meta failed: the delay before this phase runs again, or (retries spent) the failure."""
        job.attempts += 1
        settings = self.settings
        if job.attempts > settings.max_retries:
            log.warning("event %s failed %d times (%s): %s", job.event.id, job.attempts, reason, detail)
            if job.mids:
                decision = Decision(
                    Outcome.FAILED, Reason.PARTIAL_SEND, LedgerWrite.FINISH, detail, error_code, deadletter=True
                )
            else:
                decision = Decision(Outcome.FAILED, reason, LedgerWrite.RELEASE, detail, error_code, deadletter=True)
            return self._decide(job, decision)
        self.metrics.retries.labels(reason=str(reason)).inc()
        ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0 ** (job.attempts - 1))
        delay = max(min_delay, ceiling * (0.5 + 0.5 * random.random()))  # noqa: S311 - jitter, not security
        log.info("event %s: %s (%s); trying again in %.1f s", job.event.id, reason, detail, delay)
        return delay

    def _unexpected(self, job: Job) -> Wait:
        """An error nobody planned for (a bug this record triggers): retried at the phase, then given up."""
        job.errors += 1
        log.error("event %s: unexpected error in phase %s (%d in a row)", job.event.id, job.phase, job.errors)
        settings = self.settings
        if job.errors <= settings.max_retries:
            self.metrics.retries.labels(reason=str(Reason.INTERNAL_ERROR)).inc()
            return min(settings.retry_max_seconds, settings.retry_base_seconds * 2.0 ** (job.errors - 1))
        job.errors = 0
        if job.phase in (Phase.ADMIT, Phase.CHOOSE, Phase.SEND, Phase.CONFIRM, Phase.WITNESS):
            self.echoes.unwatch(job)
            detail = f"unexpected error in phase {job.phase}"
            if job.mids or job.phase is Phase.CONFIRM:
                decision = Decision(Outcome.FAILED, Reason.INTERNAL_ERROR, LedgerWrite.FINISH, detail)
            else:
                decision = Decision(Outcome.FAILED, Reason.INTERNAL_ERROR, LedgerWrite.RELEASE, detail, deadletter=True)
            return self._decide(job, decision)
        # Recording itself keeps failing: leave the record uncommitted; a restart replays it.
        self.leases.let_go(job.event.id)
        raise GiveUp(f"event {job.event.id}: phase {job.phase} keeps failing")

    # -- RECORD, PUBLISH, DEADLETTER --------------------------------------------------------

    def _decide(self, job: Job, decision: Decision) -> Wait:
        self.echoes.unwatch(job)
        job.decision = decision
        # The reply record before the ledger's done: a crash between the two replays the event,
        # which publishes the record again with the same id (consumers drop exact repeats) rather
        # than never.
        job.phase = Phase.PUBLISH
        return None

    async def _record(self, job: Job) -> Wait:
        decision = job.decision
        assert decision is not None
        event = job.event
        if job.recorded < 1:
            if decision.ledger is LedgerWrite.FINISH:
                # The answer itself is not kept once done (the ledger keeps done entries for 48 h).
                entry = Entry(Step.DONE, None, tuple(job.mids), outcome=str(decision.outcome))
                await self.store.finish(event.id, entry, ttl=self.settings.ledger_ttl_seconds)
                for mid in job.mids:
                    self.echoes.recorded(mid)
            elif decision.ledger is LedgerWrite.RELEASE:
                await self.store.release(self._owner, [event.id])
            self.leases.let_go(event.id)
            job.recorded = 1
        if job.recorded < 2:
            if decision.history:
                await self._remember_turns(event, job.answer)
            job.recorded = 2
        if job.recorded < 3:
            if decision.handover:
                await self._pause_conversation(event, self._clock() + self.settings.handover_pause_seconds, "handover")
            job.recorded = 3
        job.phase = Phase.DEADLETTER if decision.deadletter else Phase.FINISHED
        return None

    async def _publish(self, job: Job) -> Wait:
        decision = job.decision
        assert decision is not None
        attempts = job.attempts + 1 if decision.outcome is Outcome.SENT else 0
        record = ReplyRecord(
            job.event,
            decision.outcome,
            decision.reason,
            self.agent.name,
            tuple(job.mids),
            decision.detail,
            decision.error_code,
            attempts,
        )
        await self.publisher.record(record)
        job.phase = Phase.RECORD
        return None

    async def _deadletter(self, job: Job) -> Wait:
        decision = job.decision
        assert decision is not None
        published = await self.publisher.deadletter(
            job.value,
            job.key,
            decision.reason,
            decision.detail or "",
            event_id=job.event.id or None,
            source=job.source,
        )
        if not published:
            # Kafka did not take it: kept (uncommitted) and tried again, never dropped.
            job.deadletter_tries += 1
            return min(30.0, 0.5 * 2.0 ** (job.deadletter_tries - 1))
        job.phase = Phase.FINISHED
        return None

    # -- echoes -----------------------------------------------------------------------------

    async def _witness(self, job: Job) -> Wait:
        """An echo: confirm the part it shows arrived, or (not ours) a person answered."""
        event = job.event
        if not event.mid or not event.conversation_id or not event.user_id or self.echoes.is_recorded(event.mid):
            # Nothing to match, or the echo of a reply recorded done with this very id.
            job.phase = Phase.FINISHED
            return None
        token = parse_echo_token(event.metadata)
        fingerprint = text_fingerprint(event.text) if token is None and event.text else None
        here = self.echoes.seen(event, token, fingerprint)
        # In the store too: a worker elsewhere (or this one after a restart) may be waiting for it.
        stored = await self.store.witness(
            event.account_id,
            event.user_id,
            event.mid,
            token=token,
            fingerprint=fingerprint,
            timestamp=event.timestamp_ms / 1000,
            ttl=self.settings.ledger_ttl_seconds,
        )
        if here is Seen.LATE or (stored is Witnessed.LATE and here is Seen.UNKNOWN):
            self.metrics.ambiguous_sends.labels(resolution="late_echo").inc()
            log.warning("an echo arrived after its part was sent again (%s): that reply went out twice", event.mid)
        ours = here is not Seen.UNKNOWN or stored is not Witnessed.NOT_OURS or token is not None
        if not ours and not (self.settings.app_id and event.app_id == self.settings.app_id):
            await self._takeover(event)
        job.phase = Phase.FINISHED
        return None

    async def _takeover(self, event: InboundEvent) -> None:
        """An echo that is not ours: a person answered from the app; automatic replies pause."""
        assert event.conversation_id is not None
        until = event.timestamp_ms / 1000 + self.settings.human_pause_seconds
        if until <= self._clock():
            return
        await self._pause_conversation(event, until, "human")
        if event.text and self._history_turns > 0:
            await self.store.append_history(
                event.conversation_id,
                (Turn("assistant", event.text),),
                self._history_turns,
                self.settings.history_ttl_seconds,
            )

    async def _pause_conversation(self, event: InboundEvent, until: float, kind: str) -> None:
        assert event.conversation_id is not None
        await self.store.pause_conversation(event.conversation_id, until)
        self.metrics.takeovers.labels(kind=kind).inc()
        log.info("automatic replies paused in a conversation of account %s (%s)", event.account_id, kind)
        if self._on_pause is not None:
            self._on_pause()

    async def _remember_turns(self, event: InboundEvent, answer: Answer | None) -> None:
        if self._history_turns <= 0 or not event.conversation_id:
            return
        turns = [Turn("user", event.user_text)] if event.user_text else []
        if answer is not None and answer.parts:
            turns.append(Turn("assistant", "\n".join(answer.parts)))
        if turns:
            await self.store.append_history(
                event.conversation_id, tuple(turns), self._history_turns, self.settings.history_ttl_seconds
            )
