"""One reconcile pass: every account's recent conversations against what Kafka holds.

For each account (concurrently: each has its own read budget) the pass lists the conversations
updated within the lookback, newest first, page by page until a page holds none that recent;
reads their recent messages (with the listing, or one call per conversation); keeps the inbound
messages written within the lookback and older than the minimum age; builds the envelope each
one's webhook would have produced (``envelopes.py``); and publishes those whose event id the
messages topic does not hold (``delivered.py``). Published ids join the index at once, so a
message seen twice in a pass, or again in the next pass, is published once.

The pass also hydrates ``message_edit`` events that stand for new messages, and checks each
account's webhook subscription (``subscription.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from consumers.reconcile.accounts import AccountState, AccountStatus, PassOutcome
from consumers.reconcile.delivered import DeliveredIndex, EditToHydrate
from consumers.reconcile.envelopes import Candidate, Source, find_inbound, recovered_event
from consumers.reconcile.graph import Endpoint, GraphReader
from consumers.reconcile.history import (
    ApiMessage,
    ConversationRef,
    parse_conversation_page,
    parse_message,
    parse_messages,
)
from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.settings import ReconcileSettings
from consumers.reconcile.subscription import SubscriptionWatch
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import AccountConfig, Flavour
from igw.errors import PublishError
from igw.normalize import Event

__all__ = ["MESSAGE_FIELDS", "AccountReport", "PassReport", "Publisher", "Reconciler"]

log = logging.getLogger(__name__)

# What a message must show to be rebuilt as its webhook (Meta's message fields).
MESSAGE_FIELDS: Final = "id,created_time,from,to,message,attachments,story,is_unsupported,reply_to"


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Publish every event and wait for Kafka's acknowledgement; raise when it does not come."""
        ...


@dataclass(slots=True)
class AccountReport:
    account_id: str
    outcome: PassOutcome = PassOutcome.COMPLETE
    conversations: int = 0
    checked: int = 0
    recovered: int = 0
    detail: str = ""


@dataclass(slots=True)
class PassReport:
    accounts: list[AccountReport] = field(default_factory=list)
    hydrated: int = 0
    seconds: float = 0.0
    subscriptions: dict[str, bool] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(a.outcome is PassOutcome.COMPLETE for a in self.accounts)

    @property
    def recovered(self) -> int:
        return sum(a.recovered for a in self.accounts)

    def summary(self) -> str:
        """One line for logs and ``igw reconcile --once``."""
        checked = sum(a.checked for a in self.accounts)
        conversations = sum(a.conversations for a in self.accounts)
        line = (
            f"{len(self.accounts)} account(s), {conversations} conversation(s), {checked} inbound message(s) checked,"
            f" {self.recovered} recovered, {self.hydrated} hydrated in {self.seconds:.1f} s"
        )
        missing = sorted(account for account, active in self.subscriptions.items() if not active)
        if missing:
            line += f"; webhook subscription MISSING for {', '.join(missing)}"
        return line

    def reason(self) -> str:
        """Why the pass is incomplete, in one line (empty when it is complete)."""
        return "; ".join(
            f"account {a.account_id}: {a.outcome}" + (f" ({a.detail})" if a.detail else "")
            for a in self.accounts
            if a.outcome is not PassOutcome.COMPLETE
        )


class Reconciler:
    """Runs passes; keeps each account's state and what it learnt between passes."""

    def __init__(
        self,
        settings: ReconcileSettings,
        reader: GraphReader,
        index: DeliveredIndex,
        publisher: Publisher,
        metrics: ReconcileMetrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._reader = reader
        self._index = index
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._accounts = settings.send_api.accounts
        self._states = {account.account_id: AccountState(account.account_id) for account in self._accounts}
        # The id the account has in webhooks (entry.id): "me" is resolved once.
        self._webhook_ids: dict[str, str] = {}
        # Inbound messages already counted as checked, by event id, with their time (pruned).
        self._counted: dict[str, int] = {}
        # Conversations compared completely, with the updated_time they had then: unchanged ones are
        # not read again (what saves calls when each conversation costs one).
        self._settled: dict[str, int] = {}
        self._subscriptions = SubscriptionWatch(settings, reader, metrics)
        self._publish_lock = asyncio.Lock()

    @property
    def states(self) -> dict[str, AccountState]:
        return self._states

    def label(self, account: AccountConfig) -> str:
        """The account as metrics and logs name it: its webhook id once known."""
        return self._webhook_ids.get(account.account_id, account.account_id)

    async def run_pass(self) -> PassReport:
        started = self._monotonic()
        deadline = started + self._settings.pass_timeout_seconds
        now = self._clock()
        cutoff_ms = int((now - self._settings.lookback_seconds) * 1000)
        report = PassReport()
        await self._index.catch_up(cutoff_ms)
        report.hydrated = await self.hydrate(self._index.take_edits(), deadline)
        reports = await asyncio.gather(*(self._account_pass(account, deadline) for account in self._accounts))
        report.accounts = list(reports)
        report.subscriptions = await self._subscriptions.check(
            [a for a in self._accounts if self._states[a.account_id].status is AccountStatus.READY],
            self.label,
            deadline,
        )
        self._index.prune(cutoff_ms - 10 * 60 * 1000)
        for event_id in [e for e, when in self._counted.items() if when < cutoff_ms]:
            del self._counted[event_id]
        for key in [k for k, updated in self._settled.items() if updated < cutoff_ms]:
            del self._settled[key]
        self._metrics.delivered_index.set(len(self._index))
        report.seconds = self._monotonic() - started
        self._metrics.pass_duration.observe(report.seconds)
        if report.complete:
            self._metrics.last_pass.set(self._clock())
        return report

    async def _webhook_id(self, account: AccountConfig, deadline: float) -> str:
        known = self._webhook_ids.get(account.account_id)
        if known is not None:
            return known
        webhook_id = account.account_id
        if account.account_id == "me":
            # An Instagram-Login token alone: its webhooks name the professional account's user_id.
            body = await self._reader.get(account, "me", {"fields": "user_id,username"}, Endpoint.ME, deadline=deadline)
            resolved = body.get("user_id") or body.get("id")
            if not isinstance(resolved, str | int) or not str(resolved):
                raise SendError(ErrorClass.UNKNOWN, meta_message="GET /me did not name the account's user_id")
            webhook_id = str(resolved)
        self._webhook_ids[account.account_id] = webhook_id
        return webhook_id

    async def _account_pass(self, account: AccountConfig, deadline: float) -> AccountReport:
        state = self._states[account.account_id]
        report = AccountReport(self.label(account))
        if not state.due(self._clock()):
            report.outcome = PassOutcome.PAUSED if state.status is AccountStatus.PAUSED else PassOutcome.SKIPPED
            report.detail = (
                f"{state.status} until {time.strftime('%H:%M:%S', time.gmtime(state.until))}Z: {state.reason}"
            )
            self._metrics.passes.labels(report.account_id, report.outcome).inc()
            return report
        try:
            await self._read_account(account, deadline, report)
        except SendError as err:
            report.outcome = state.failed(
                err, self._clock(), pause_seconds=self._settings.account_pause_seconds, default_backoff=0.0
            )
            report.detail = str(err)
            level = logging.ERROR if report.outcome is PassOutcome.PAUSED else logging.WARNING
            action = (
                "; renew the account's token (IGW_ACCESS_TOKEN / IGW_ACCOUNTS_FILE) or check the account in Meta's"
                " dashboards, then restart igw reconcile"
                if report.outcome is PassOutcome.PAUSED
                else "; the next pass tries again"
            )
            log.log(level, "reconcile of account %s stopped: %s%s", report.account_id, err, action)
        except (PublishError, LookupError) as exc:
            # Kafka did not take the recovered events, or the topic is gone: nothing is lost, the next pass sees them.
            report.outcome = PassOutcome.FAILED
            report.detail = f"Kafka: {type(exc).__name__}"
            log.warning("reconcile of account %s could not publish: %s", report.account_id, type(exc).__name__)
        else:
            state.completed()
        self._metrics.account_paused.labels(report.account_id).set(1 if state.status is AccountStatus.PAUSED else 0)
        self._metrics.passes.labels(report.account_id, report.outcome).inc()
        return report

    async def _read_account(self, account: AccountConfig, deadline: float, report: AccountReport) -> None:
        settings = self._settings
        webhook_id = await self._webhook_id(account, deadline)
        report.account_id = webhook_id
        # Series from zero, before the first count: Prometheus' increase() then sees the first ones.
        self._metrics.checked.labels(webhook_id)
        self._metrics.recovered.labels(webhook_id, "message")
        platform = "messenger" if account.flavour is Flavour.MESSENGER else "instagram"
        path = "me/conversations" if account.account_id == "me" else f"{account.account_id}/conversations"
        expansion = f"messages.limit({settings.messages_per_conversation}){{{MESSAGE_FIELDS}}}"
        fields = "id,updated_time,participants" + (f",{expansion}" if settings.expand_messages else "")
        after: str | None = None
        while True:
            now = self._clock()
            cutoff_ms = int((now - settings.lookback_seconds) * 1000)
            until_ms = int((now - settings.min_age_seconds) * 1000)
            params = {"platform": platform, "fields": fields, "limit": str(settings.page_size)}
            if after is not None:
                params["after"] = after
            body = await self._reader.get(account, path, params, Endpoint.CONVERSATIONS, deadline=deadline)
            page = parse_conversation_page(body)
            # Newest first: a page with nothing updated within the lookback ends the listing.
            recent = [c for c in page.conversations if c.updated_ms is None or c.updated_ms >= cutoff_ms]
            candidates: list[Candidate] = []
            settled: dict[str, int] = {}
            for conversation in recent:
                key = f"{account.account_id}\x1f{conversation.id}"
                if conversation.updated_ms is not None and self._settled.get(key) == conversation.updated_ms:
                    continue  # nothing new since every message in it was compared with Kafka
                messages = conversation.messages
                if messages is None:
                    messages = await self._conversation_messages(account, conversation, expansion, deadline)
                report.conversations += 1
                candidates.extend(find_inbound(webhook_id, messages, since_ms=cutoff_ms, until_ms=until_ms))
                # Settled only once its newest message is past the minimum age (none waits for a later pass).
                if conversation.updated_ms is not None and all(m.created_ms <= until_ms for m in messages[:1]):
                    settled[key] = conversation.updated_ms
            if candidates:
                await self._settle(account, platform, webhook_id, candidates, cutoff_ms, report)
            self._settled.update(settled)
            if not recent or page.after is None:
                return
            after = page.after

    async def _conversation_messages(
        self, account: AccountConfig, conversation: ConversationRef, expansion: str, deadline: float
    ) -> tuple[ApiMessage, ...]:
        body = await self._reader.get(
            account, conversation.id, {"fields": expansion}, Endpoint.CONVERSATION, deadline=deadline
        )
        return parse_messages(body.get("messages"))

    async def _settle(
        self,
        account: AccountConfig,
        platform: str,
        webhook_id: str,
        candidates: list[Candidate],
        cutoff_ms: int,
        report: AccountReport,
    ) -> None:
        """Publish the candidates Kafka does not hold (read back just now)."""
        await self._index.catch_up(cutoff_ms)
        received_at = int(self._clock() * 1000)
        missing: dict[str, Event] = {}
        for candidate in candidates:
            event = recovered_event(platform, webhook_id, candidate, received_at=received_at)
            if event is None:
                continue
            if event.id not in self._counted:
                self._counted[event.id] = candidate.message.created_ms
                report.checked += 1
                self._metrics.checked.labels(webhook_id).inc()
            if event.id not in self._index:
                missing[event.id] = event
        if not missing:
            return
        await self._publish(list(missing.values()))
        report.recovered += len(missing)
        for event in missing.values():
            self._metrics.recovered.labels(webhook_id, event.type).inc()
        log.info("account %s: %d inbound message(s) Meta never delivered published", webhook_id, len(missing))

    async def _publish(self, events: list[Event]) -> None:
        async with self._publish_lock:
            # Checked again under the lock: two accounts never race, but hydration and a pass may.
            fresh = [event for event in events if event.id not in self._index]
            if fresh:
                await self._publisher.publish(fresh)
            now_ms = int(self._clock() * 1000)
            for event in fresh:
                self._index.add(event.id, now_ms)

    def _account_for(self, webhook_id: str) -> AccountConfig | None:
        for account in self._accounts:
            if self._webhook_ids.get(account.account_id, account.account_id) == webhook_id:
                return account
        if len(self._accounts) == 1 and self._accounts[0].account_id == "me":
            return self._accounts[0]
        return None

    async def hydrate(self, edits: list[EditToHydrate], deadline: float) -> int:
        """Look up each ``message_edit`` that stands for a new message; publish the ``message`` event."""
        if not self._settings.hydrate:
            return 0
        published = 0
        for edit in edits:
            account = self._account_for(edit.account_id)
            if account is None:
                self._metrics.hydrated.labels(edit.account_id or "unknown", "no_account").inc()
                continue
            if not self._states[account.account_id].due(self._clock()):
                self._metrics.hydrated.labels(edit.account_id, "account_paused").inc()
                continue
            outcome = await self._hydrate_one(account, edit, deadline)
            self._metrics.hydrated.labels(edit.account_id, outcome).inc()
            published += outcome == "published"
        return published

    async def _hydrate_one(self, account: AccountConfig, edit: EditToHydrate, deadline: float) -> str:
        try:
            webhook_id = await self._webhook_id(account, deadline)
            body = await self._reader.get(
                account, edit.mid, {"fields": MESSAGE_FIELDS}, Endpoint.MESSAGE, deadline=deadline
            )
        except SendError as err:
            if err.error_class in {ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED}:
                self._states[account.account_id].failed(
                    err, self._clock(), pause_seconds=self._settings.account_pause_seconds, default_backoff=0.0
                )
            log.warning("message %s of account %s could not be looked up: %s", edit.mid, edit.account_id, err)
            return "not_found" if err.error_class is ErrorClass.INVALID_MESSAGE else "failed"
        message = parse_message(body)
        if message is None or message.from_id is None or message.from_id == webhook_id:
            return "unusable"
        event = recovered_event(
            edit.platform,
            webhook_id,
            Candidate(message, None),
            received_at=int(self._clock() * 1000),
            source=Source.LOOKUP,
            replaces=edit.event_id,
        )
        if event is None:
            return "unusable"
        if event.id in self._index:
            return "delivered"
        try:
            await self._publish([event])
        except PublishError:
            # Not lost: the conversation pass finds the message missing and publishes it.
            return "failed"
        self._metrics.recovered.labels(webhook_id, event.type).inc()
        return "published"
