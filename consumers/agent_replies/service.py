"""Assembling and running the agent consumer: store, agent, Send API client, Kafka, metrics.

:func:`run_agent` runs until ``stop`` is set, then shuts down in this order (each step says why):

1. stop fetching: no new work is taken up;
2. wait (``IGW_SHUTDOWN_TIMEOUT_SECONDS``) for the events in hand: their replies finish and their
   outcomes are recorded;
3. cancel what is still running: those records stay uncommitted and are replayed next time (the
   ledger keeps that from answering twice), and release their leases, so that whoever replays
   them takes over at once, at the step the ledger shows;
4. commit the finished offsets, then leave the group (partitions move without a session timeout);
5. close the producer (flushes reply records), the Send API client, the agent and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from consumers.agent_replies.agent import Agent
from consumers.agent_replies.http_agent import HttpAgent
from consumers.agent_replies.job import Job
from consumers.agent_replies.leases import LeaseKeeper, StoreHealth
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import BadEvent, InboundEvent, parse_event
from consumers.agent_replies.openai_agent import OpenAIAgent
from consumers.agent_replies.outcomes import Outcome, OutcomePublisher, Reason
from consumers.agent_replies.processor import ReplyProcessor, Sender
from consumers.agent_replies.redisstore import RedisStore
from consumers.agent_replies.rules import RulesAgent
from consumers.agent_replies.scheduler import ConversationScheduler
from consumers.agent_replies.settings import AGENT_TOPICS, AgentSettings
from consumers.agent_replies.store import MemoryStore, Store
from consumers.common.lag import lag_sampler
from consumers.common.metrics import ConsumerMetrics
from consumers.common.metrics_server import create_metrics_app, serve_metrics
from consumers.common.partitioner import CachedPartitioner
from consumers.common.runner import (
    CommitOnRevoke,
    OffsetTracker,
    Ticket,
    commit_finished,
    drain,
    poll_loop,
    stop_consumer,
)
from consumers.common.tasks import background
from consumers.send_api.client import SendApiClient
from consumers.send_api.metrics import SendApiMetrics
from igw.envelope import ERASURE, Topic
from igw.keystore import open_keystore
from igw.metrics import process_registry
from igw.producers import start_producer
from igw.sealing import Opener
from igw.topics import ensure_topics

__all__ = ["build_agent", "build_store", "run_agent"]

log = logging.getLogger(__name__)

GAUGE_INTERVAL_SECONDS = 15.0


def build_agent(settings: AgentSettings) -> Agent:
    """The agent ``IGW_AGENT`` names, configured from the settings (a rules file is read and checked here)."""
    if settings.agent == "http":
        assert settings.agent_url is not None
        return HttpAgent(settings.agent_url, token=settings.agent_token, timeout=settings.agent_timeout_seconds)
    if settings.agent == "openai":
        assert settings.openai_api_key is not None
        return OpenAIAgent(
            settings.openai_base_url,
            settings.openai_api_key,
            settings.openai_model,
            system_prompt=OpenAIAgent.read_prompt(settings.openai_system_prompt_file),
            timeout=settings.agent_timeout_seconds,
            max_tokens=settings.openai_max_tokens,
            handover_marker=settings.openai_handover_marker,
        )
    assert settings.rules_file is not None
    return RulesAgent.from_file(settings.rules_file)


def build_store(settings: AgentSettings) -> Store:
    if settings.redis_url:
        return RedisStore.from_url(settings.redis_url, settings.redis_prefix, timeout=settings.store_timeout_seconds)
    return MemoryStore()


def _unusable() -> InboundEvent:
    """The stand-in event of a record that is not a usable envelope (it is only dead-lettered)."""
    return InboundEvent(id="", type="", platform="", account_id="", user_id=None, conversation_id=None, timestamp_ms=0)


@asynccontextmanager
async def _gauges(store: Store, metrics: AgentMetrics, wake: asyncio.Event) -> AsyncIterator[None]:
    """Keep the pause gauges current: on a timer, and at once after a pause."""

    async def loop() -> None:
        while True:
            try:
                metrics.paused_conversations.set(await store.paused_conversations())
                metrics.paused_accounts.set(await store.paused_accounts())
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down for a moment; the next round tries again
                log.debug("pause gauges not updated", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), GAUGE_INTERVAL_SECONDS)
            wake.clear()

    async with background(loop(), name="agent-gauges"):
        yield


async def run_agent(
    settings: AgentSettings,
    stop: asyncio.Event,
    *,
    sender: Sender | None = None,
    agent: Agent | None = None,
    store: Store | None = None,
    serve_http: bool = True,
    started: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Consume and answer until ``stop`` is set (see the module docstring for the shutdown steps).

    ``sender``, ``agent`` and ``store`` default to what the settings describe; tests and embedders
    may pass their own. ``started`` is set once the consumer has joined its group
    and received its partitions. The process's metrics (the agent's, the Send API client's, the
    consumer group's) go to ``registry``, a new one by default, which ``/metrics`` serves.
    """
    registry = registry if registry is not None else process_registry()
    metrics = AgentMetrics(registry)
    consumer_metrics = ConsumerMetrics(registry, settings.consumer.group_id)
    kafka = settings.consumer.kafka
    if settings.create_topics:
        await ensure_topics(kafka, (*AGENT_TOPICS, Topic.REPLIES, Topic.DEADLETTER))
    async with AsyncExitStack() as stack:
        store = store if store is not None else build_store(settings)
        stack.push_async_callback(store.close)
        agent = agent if agent is not None else build_agent(settings)
        stack.push_async_callback(agent.close)
        if sender is None:
            client = SendApiClient(settings.send_api, metrics=SendApiMetrics(registry))
            await stack.enter_async_context(client)
            sender = client
        producer = AIOKafkaProducer(
            **kafka.client_kwargs(),
            client_id=f"{kafka.client_id}-agent",
            acks="all" if kafka.acks == "all" else 1,
            enable_idempotence=kafka.enable_idempotence,
            linger_ms=kafka.linger_ms,
            max_batch_size=kafka.max_batch_bytes,
            compression_type=None if kafka.compression == "none" else kafka.compression,
            partitioner=CachedPartitioner(),
        )
        await start_producer(producer, kafka)
        stack.push_async_callback(producer.stop)
        publisher = OutcomePublisher(producer, kafka.topic(Topic.REPLIES), kafka.topic(Topic.DEADLETTER), metrics)
        wake_gauges = asyncio.Event()
        health = StoreHealth(store.ping, metrics)
        stack.push_async_callback(health.close)
        leases = LeaseKeeper(store, settings.owner_id, settings.lease_seconds, health, metrics)
        processor = ReplyProcessor(
            settings,
            store,
            agent,
            sender,
            publisher,
            metrics=metrics,
            health=health,
            leases=leases,
            on_pause=wake_gauges.set,
        )
        await stack.enter_async_context(_gauges(store, metrics, wake_gauges))
        await stack.enter_async_context(background(leases.run(), name="agent-leases"))

        opener: Opener | None = None
        if settings.content_keys is not None:
            keys = open_keystore(settings.content_keys)
            stack.push_async_callback(keys.close)
            opener = Opener(keys)
            await opener.refresh()
            await stack.enter_async_context(background(opener.watch(), name="agent-content-keys"))
        erasures_topic = kafka.topic(Topic.ERASURES)

        async def erase(record: Any) -> None:
            """An erasure record (docs/privacy.md): the person's history and pause go; the ledger keeps ids."""
            try:
                document = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError:
                return
            conversation = document.get("conversation_id") if isinstance(document, dict) else None
            if document.get("type") == ERASURE and isinstance(conversation, str):
                await store.forget(conversation)
                log.info("erasure applied to a conversation of account %s", document.get("account_id"))

        async def readable(value: bytes | None) -> bytes | None:
            """The record's envelope with sealed content opened (IGW_CONTENT_KEYS); else as it came."""
            if opener is None or not value or b'"sealed"' not in value:
                return value
            try:
                return orjson.dumps(await opener.open(orjson.loads(value)))
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise BadEvent(f"sealed content: {exc}") from None

        tracker = OffsetTracker()
        listener = CommitOnRevoke(
            tracker,
            drain_timeout=min(10.0, settings.consumer.shutdown_timeout_seconds),
            on_revoked=leases.release_stale,
        )
        consumer = AIOKafkaConsumer(**settings.consumer.consumer_kwargs())
        listener.consumer = consumer

        def ticket_of(job: Job) -> Ticket:
            return job.ticket

        scheduler: ConversationScheduler[Job] = ConversationScheduler(
            processor.handle,
            ticket_of,
            concurrency=settings.concurrency,
            max_in_flight=settings.max_in_flight,
            on_change=metrics.in_flight.set,
        )

        async def submit(record: Any, ticket: Ticket) -> None:
            source = (record.topic, record.partition, record.offset)
            if record.topic == erasures_topic:
                try:
                    await erase(record)
                finally:
                    ticket.finish()
                return
            try:
                event = parse_event(await readable(record.value))
            except BadEvent as exc:
                log.warning("record %s[%d]@%d is not a usable envelope: %s", *source, exc)
                metrics.replies.labels(outcome=Outcome.FAILED, reason=Reason.BAD_EVENT).inc()
                job = processor.bad_job(_unusable(), ticket, record.value, record.key, source, str(exc))
                await scheduler.submit(f"bad:{record.topic}:{record.partition}", job)
                return
            conversation = event.conversation_id or event.account_id
            if event.is_echo:
                # Its own lane: a reply waiting for this very echo is ahead of it in the conversation's.
                await scheduler.submit(
                    f"echo:{conversation}", processor.job(event, ticket, record.value, record.key, source)
                )
            elif event.answerable:
                await scheduler.submit(conversation, processor.job(event, ticket, record.value, record.key, source))
            else:
                ticket.finish()  # edits, deletions, reactions: nothing to answer

        joined = asyncio.Event()

        def on_assigned(_partitions: object) -> None:
            joined.set()
            if started is not None:
                started.set()

        listener.on_assigned = on_assigned

        async def ready() -> bool:
            # A replica without partitions (more replicas than partitions) is still ready: it stands by.
            if not joined.is_set():
                return False
            if not await store.ping():
                health.down("no answer to a ping")
                return False
            return health.up

        if serve_http:
            app = create_metrics_app(registry, ready, status=health.status)
            await stack.enter_async_context(
                serve_metrics(app, settings.consumer.metrics_host, settings.consumer.metrics_port)
            )
        consumer.subscribe(list(settings.consumer.topics), listener=listener)
        try:
            await consumer.start()  # inside: a stop signal may cancel start-up here, and stop() must follow
            log.info("agent consumer started: %s", settings.describe())
            async with lag_sampler(
                consumer, consumer_metrics, settings.consumer.topics, settings.consumer.lag_interval_seconds
            ):
                await poll_loop(
                    consumer,
                    tracker,
                    submit,
                    stop,
                    metrics=consumer_metrics,
                    max_records=settings.consumer.max_records_per_poll,
                    poll_timeout_ms=settings.consumer.poll_timeout_ms,
                    commit_interval=settings.consumer.commit_interval_seconds,
                )
                log.info("stopping: %d events in hand", tracker.in_flight)
                if not await drain(tracker, settings.consumer.shutdown_timeout_seconds):
                    log.warning("%d events still in hand at shutdown; they are replayed on restart", tracker.in_flight)
        finally:
            await scheduler.close()
            await leases.release_all()
            await commit_finished(consumer, tracker)
            await stop_consumer(consumer)
