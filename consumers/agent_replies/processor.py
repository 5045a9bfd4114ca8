"""What the agent consumer does with one inbound event, from filters to the reply record.

The order of the checks is the order of cost: what the event says (type, standby, age), then the
store (account and conversation pauses, the ledger), then the agent and Meta. ``handle`` returns
None when the event is finished for good, or the seconds after which to try it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consumers.agent_replies.agent import Agent, AgentError
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import AgentReply, InboundEvent, Turn
from consumers.agent_replies.outcomes import Outcome, OutcomePublisher, Reason, ReplyRecord
from consumers.agent_replies.settings import AgentSettings
from consumers.agent_replies.store import ClaimState, Store
from consumers.common.runner import Ticket
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import OutboundMessage, QuickReply, SendResult

__all__ = ["Job", "ReplyProcessor", "Sender"]

log = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, account_id: str, message: OutboundMessage) -> list[SendResult]: ...


@dataclass(slots=True)
class Job:
    """One fetched record and its parsed event, with the attempts made so far."""

    event: InboundEvent
    ticket: Ticket
    value: bytes | None
    key: bytes | None
    source: tuple[str, int, int]
    attempts: int = 0


# Meta's final errors: what to record, and whether the dead-letter topic should keep the event.
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
        clock: Callable[[], float] = time.time,
        on_pause: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.agent = agent
        self.sender = sender
        self.publisher = publisher
        self._clock = clock
        self._on_pause = on_pause
        # Only agents that read the conversation's turns pay for keeping them.
        self._history_turns = settings.history_turns if agent.uses_history else 0
        self._call_duration = metrics.agent_call_duration.labels(agent=agent.name)

    async def handle(self, job: Job) -> float | None:
        event = job.event
        if not event.answerable:
            await self._observe(event)
            return None
        if event.is_echo or (event.sender_id is not None and event.sender_id == event.account_id):
            return None  # our own message (or the business's): answering it would loop
        if event.standby:
            await self._record(event, Outcome.SKIPPED, Reason.STANDBY)
            return None
        if not event.user_id or not event.conversation_id:
            await self._fail_bad(job, "message without user_id or conversation_id")
            return None
        now = self._clock()
        if now * 1000 - event.timestamp_ms > self.settings.window_seconds * 1000:
            await self._record(event, Outcome.SKIPPED, Reason.WINDOW_CLOSED, detail="older than the reply window")
            return None
        account_paused, conversation_paused = await self.store.pauses(event.account_id, event.conversation_id)
        if account_paused is not None:
            await self._record(event, Outcome.SKIPPED, Reason.ACCOUNT_PAUSED)
            await self._deadletter(job, Reason.ACCOUNT_PAUSED, "the account is paused after a token or account error")
            return None
        if conversation_paused is not None:
            await self._remember_turns(event, None)
            await self._record(event, Outcome.SKIPPED, Reason.HUMAN_TAKEOVER)
            return None
        claim = await self.store.claim(event.id, self.settings.owner_id, self.settings.lease_seconds)
        if claim.state is ClaimState.DONE:
            self.metrics.ledger_hits.inc()
            await self._record(event, Outcome.SKIPPED, Reason.DUPLICATE, message_ids=claim.message_ids)
            return None
        if claim.state is ClaimState.HELD:
            # Someone else is answering it, or crashed while doing so: look again when the lease ends.
            self.metrics.retries.labels(reason="lease_held").inc()
            return min(self.settings.lease_seconds, claim.retry_after + 0.05 + random.random() * 0.1)  # noqa: S311
        return await self._answer(job)

    async def _answer(self, job: Job) -> float | None:
        event = job.event
        assert event.conversation_id is not None
        assert event.user_id is not None
        history = await self.store.history(event.conversation_id, self._history_turns)
        started = time.perf_counter()
        try:
            # A timeout scope, not wait_for: no task per call, and an agent that answers at once
            # (the rules agent) runs without giving up the event loop.
            async with asyncio.timeout(self.settings.agent_timeout_seconds):
                reply = await self.agent.reply(event, history)
        except (AgentError, TimeoutError) as exc:
            detail = str(exc) or "the agent did not answer in time"
            return await self._retry_or_fail(job, Reason.AGENT_ERROR, detail)
        finally:
            self._call_duration.observe(time.perf_counter() - started)
        if reply.is_empty:
            await self.store.complete(event.id, Outcome.SKIPPED, (), self.settings.ledger_ttl_seconds)
            await self._remember_turns(event, None)
            await self._record(event, Outcome.SKIPPED, Reason.NO_REPLY)
            return None
        message_ids: tuple[str, ...] = ()
        if reply.text:
            message = OutboundMessage(
                recipient_id=event.user_id,
                text=reply.text,
                quick_replies=tuple(QuickReply(b.title, b.payload) for b in reply.quick_replies),
            )
            try:
                results = await self.sender.send(event.account_id, message)
            except SendError as err:
                return await self._send_failed(job, err)
            message_ids = tuple(result.message_id for result in results)
            # The ledger first: it is what keeps a replay from answering twice.
            await self.store.complete(event.id, Outcome.SENT, message_ids, self.settings.ledger_ttl_seconds)
            await self.store.remember_sent(message_ids, self.settings.ledger_ttl_seconds)
        else:
            await self.store.complete(event.id, Outcome.SKIPPED, (), self.settings.ledger_ttl_seconds)
        await self._remember_turns(event, reply)
        if reply.handover:
            await self._pause_conversation(event, self._clock() + self.settings.handover_pause_seconds, "handover")
        if message_ids:
            reason = Reason.HANDOVER if reply.handover else Reason.REPLIED
            await self._record(event, Outcome.SENT, reason, message_ids=message_ids, attempts=job.attempts + 1)
        else:
            await self._record(event, Outcome.SKIPPED, Reason.HANDOVER)
        return None

    async def _send_failed(self, job: Job, err: SendError) -> float | None:
        event = job.event
        settings = self.settings
        if err.parts_sent:
            # Part of a long reply reached the user: sending it all again would repeat those parts.
            await self.store.complete(event.id, Outcome.FAILED, (), settings.ledger_ttl_seconds)
            await self._record(event, Outcome.FAILED, Reason.PARTIAL_SEND, detail=str(err), error_code=err.code)
            await self._deadletter(job, Reason.PARTIAL_SEND, str(err))
            return None
        if err.retriable:
            return await self._retry_or_fail(
                job, Reason.SEND_FAILED, str(err), min_delay=err.retry_after or 0.0, error_code=err.code
            )
        if err.error_class is ErrorClass.WINDOW_CLOSED:
            await self.store.complete(event.id, Outcome.SKIPPED, (), settings.ledger_ttl_seconds)
            await self._record(event, Outcome.SKIPPED, Reason.WINDOW_CLOSED, detail=str(err), error_code=err.code)
            return None
        if err.error_class in (ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED):
            # Not answered: release the claim so that a replay from the dead-letter topic can answer it.
            await self.store.release(event.id, settings.owner_id)
            until = self._clock() + settings.account_pause_seconds
            await self.store.pause_account(event.account_id, until)
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
            reason = Reason.TOKEN_INVALID if err.error_class is ErrorClass.TOKEN_INVALID else Reason.ACCOUNT_BLOCKED
            await self._record(event, Outcome.FAILED, reason, detail=str(err), error_code=err.code)
            await self._deadletter(job, reason, str(err))
            return None
        reason, dead_letter = _FINAL_SEND_ERRORS.get(err.error_class, (Reason.SEND_ERROR, True))
        await self.store.complete(event.id, Outcome.FAILED, (), settings.ledger_ttl_seconds)
        await self._record(event, Outcome.FAILED, reason, detail=str(err), error_code=err.code)
        if dead_letter:
            await self._deadletter(job, reason, str(err))
        return None

    async def _retry_or_fail(
        self, job: Job, reason: Reason, detail: str, *, min_delay: float = 0.0, error_code: int | None = None
    ) -> float | None:
        """Release the claim; try again later with backoff, or record the failure once retries run out."""
        event = job.event
        await self.store.release(event.id, self.settings.owner_id)
        job.attempts += 1
        if job.attempts > self.settings.max_retries:
            log.warning("event %s failed %d times (%s): %s", event.id, job.attempts, reason, detail)
            await self._record(event, Outcome.FAILED, reason, detail=detail, error_code=error_code)
            await self._deadletter(job, reason, detail)
            return None
        self.metrics.retries.labels(reason=str(reason)).inc()
        ceiling = min(self.settings.retry_max_seconds, self.settings.retry_base_seconds * 2.0 ** (job.attempts - 1))
        delay = max(min_delay, ceiling * (0.5 + 0.5 * random.random()))  # noqa: S311 - jitter, not security
        log.info("event %s: %s (%s); trying again in %.1f s", event.id, reason, detail, delay)
        return delay

    async def _observe(self, event: InboundEvent) -> None:
        """Events that are not answered but tell something: an echo a person sent pauses the bot."""
        if event.type != "message_echo" or not event.conversation_id:
            return
        if self.settings.app_id and event.app_id == self.settings.app_id:
            return
        if event.mid and await self.store.is_ours(event.mid):
            return
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

    async def _remember_turns(self, event: InboundEvent, reply: AgentReply | None) -> None:
        if self._history_turns <= 0 or not event.conversation_id:
            return
        turns = [Turn("user", event.user_text)] if event.user_text else []
        if reply is not None and reply.text:
            turns.append(Turn("assistant", reply.text))
        if turns:
            await self.store.append_history(
                event.conversation_id, tuple(turns), self._history_turns, self.settings.history_ttl_seconds
            )

    async def _record(
        self,
        event: InboundEvent,
        outcome: Outcome,
        reason: Reason,
        *,
        message_ids: tuple[str, ...] = (),
        detail: str | None = None,
        error_code: int | None = None,
        attempts: int = 0,
    ) -> None:
        await self.publisher.record(
            ReplyRecord(event, outcome, reason, self.agent.name, message_ids, detail, error_code, attempts)
        )

    async def _deadletter(self, job: Job, reason: Reason, detail: str) -> None:
        await self.publisher.deadletter(job.value, job.key, reason, detail, event_id=job.event.id, source=job.source)

    async def _fail_bad(self, job: Job, detail: str) -> None:
        await self._record(job.event, Outcome.FAILED, Reason.BAD_EVENT, detail=detail)
        await self._deadletter(job, Reason.BAD_EVENT, detail)
