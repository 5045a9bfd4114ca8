"""Reconcile against the real broker, the real gateway and the Graph API emulator.

Each test writes a conversation history into the emulator, delivers some of its webhooks through
the gateway (the others are the ones Meta "dropped"), and runs passes of ``run_reconcile``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.reconciler import PassReport
from consumers.reconcile.service import run_reconcile
from consumers.reconcile.settings import ReconcileSettings
from consumers.send_api.model import AccountConfig, Flavour
from igw.config import KafkaSettings, Secret
from igw.topics import ensure_topics
from igw_tools.graph_conversations import ConversationsConfig
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.gateway import GatewayClient, post_signed
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, TEST_ACCOUNTS, RunningEmulator, StartEmulator
from tests.plugins.kafka import TopicReader
from tests.plugins.reconcile import Message, emulator_json, reconcile_settings, record_history

pytestmark = pytest.mark.kafka

IG = IG_ACCOUNT.account_id
PAGE = MESSENGER_ACCOUNT.account_id
READS = ConversationsConfig(app_secret="app-secret-0001")
# Meta's 2 reads per second matter in the tests about them; the others read faster.
FAST_READS = dataclasses.replace(READS, read_rate_per_second=100)
FAST = {"rate_per_second": 50.0}


def conversation(account: str, user: str, count: int, *, start_ms: int, platform: str = "instagram") -> list[Message]:
    return [
        Message(account, user, f"{platform[:2]}-{user}-{i}", start_ms + i * 1000, f"message {i}", platform=platform)
        for i in range(count)
    ]


async def deliver(gateway: GatewayClient, messages: list[Message]) -> None:
    for message in messages:
        response = await post_signed(gateway, message.webhook())
        assert response.status == 200


async def run_once(settings: ReconcileSettings, metrics: ReconcileMetrics | None = None) -> PassReport:
    report = await asyncio.wait_for(run_reconcile(settings, asyncio.Event(), once=True, metrics=metrics), 60)
    assert report is not None
    return report


def ids_of(records: list[Any]) -> Counter[str]:
    return Counter(orjson.loads(r.value)["id"] for r in records)


@pytest.fixture
async def emulator(start_graph_emulator: StartEmulator) -> RunningEmulator:
    return await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), READS)


@pytest.fixture
async def fast_emulator(start_graph_emulator: StartEmulator) -> RunningEmulator:
    return await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), FAST_READS)


async def test_recovers_what_was_never_delivered_once_and_only_once(
    kafka_settings: KafkaSettings,
    gateway_client: GatewayClient,
    fast_emulator: RunningEmulator,
    topic_reader: TopicReader,
) -> None:
    """Undelivered inbound messages reach Kafka once, as the webhook's events; a second pass adds none."""
    emulator = fast_emulator
    start = int(time.time() * 1000) - 600_000
    ig_a = conversation(IG, "5001", 4, start_ms=start)
    ig_b = conversation(IG, "5002", 3, start_ms=start + 100)
    page = conversation(PAGE, "7001", 3, start_ms=start + 200, platform="messenger")
    person = Message(IG, "5002", "out-5002", start + 100 + 5000, "A person answers", outbound=True)
    await record_history(emulator.base_url, [*ig_a, *ig_b, *page, person])
    dropped = {ig_a[1].mid, ig_a[3].mid, ig_b[0].mid, page[2].mid}
    await deliver(gateway_client, [m for m in [*ig_a, *ig_b, *page, person] if m.mid not in dropped])
    metrics = ReconcileMetrics()
    settings = reconcile_settings(kafka_settings, emulator.client_settings(), **FAST)

    report = await run_once(settings, metrics)

    assert report.complete, report.reason()
    assert report.recovered == 4
    assert sum(a.checked for a in report.accounts) == 10
    records = await topic_reader(kafka_settings.topic("messages"), expect=11, settle=0.5)
    counts = ids_of(records)
    assert len(records) == 11
    assert set(counts.values()) == {1}
    recovered = [orjson.loads(r.value) for r in records if b'"recovered"' in r.value]
    assert {e["message"]["mid"] for e in recovered} == dropped
    by_mid = {e["message"]["mid"]: e for e in recovered}
    assert by_mid[ig_a[3].mid]["recovered"]["answered_at"] is None
    assert by_mid[ig_b[0].mid]["recovered"]["answered_at"] == (person.timestamp // 1000) * 1000
    assert by_mid[page[2].mid]["platform"] == "messenger"
    delivered_keys = {r.key for r in records if b'"recovered"' not in r.value}
    assert {r.key for r in records if b'"recovered"' in r.value} <= delivered_keys  # same keys as the webhooks'
    assert metrics.registry.get_sample_value("igw_reconcile_recovered_total", {"account": IG, "type": "message"}) == 3
    assert metrics.registry.get_sample_value("igw_subscription_active", {"account": IG}) == 1

    second = await run_once(settings)
    assert second.complete
    assert second.recovered == 0
    assert len(await topic_reader(kafka_settings.topic("messages"), expect=12, timeout=0.5)) == 11


async def test_one_call_per_conversation_without_field_expansion(
    kafka_settings: KafkaSettings, gateway_client: GatewayClient, emulator: RunningEmulator, topic_reader: TopicReader
) -> None:
    """With IGW_RECONCILE_EXPAND_MESSAGES=false each conversation is read on its own; the result is the same."""
    start = int(time.time() * 1000) - 600_000
    history = [*conversation(IG, "5101", 2, start_ms=start), *conversation(IG, "5102", 2, start_ms=start + 50)]
    await record_history(emulator.base_url, history)
    await deliver(gateway_client, history[1:3])
    settings = reconcile_settings(
        kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), expand_messages=False
    )

    report = await run_once(settings)

    assert report.complete, report.reason()
    assert report.recovered == 2
    calls = (await emulator_json(emulator.base_url, "/_emulator/graph-calls"))[IG]
    # One listing page, one read per conversation, one subscribed_apps.
    assert calls["calls"] == 4
    assert calls["max_per_second"] <= 2
    records = await topic_reader(kafka_settings.topic("messages"), expect=4, settle=0.3)
    assert len(records) == 4
    assert set(ids_of(records).values()) == {1}


async def test_throttling_is_backed_off_and_usage_header_honoured(
    kafka_settings: KafkaSettings, emulator: RunningEmulator
) -> None:
    """Meta's 80002 and a usage header asking for a pause slow the pass down; it still completes."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    start = int(time.time() * 1000) - 600_000
    await record_history(emulator.base_url, conversation(IG, "5201", 2, start_ms=start))
    await emulator_json(emulator.base_url, "/_emulator/graph-failures", {"count": 1, "code": 80002, "account_id": IG})
    # 0.01 minutes: Meta's estimated_time_to_regain_access, here 0.6 s.
    failure = {"count": 1, "code": 4, "account_id": IG, "regain_minutes": 0.01}
    await emulator_json(emulator.base_url, "/_emulator/graph-failures", failure)
    metrics = ReconcileMetrics()
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)))
    started = time.monotonic()

    report = await run_once(settings, metrics)

    assert report.complete, report.reason()
    assert report.recovered == 2
    assert time.monotonic() - started >= 0.6
    labels = {"account": IG, "endpoint": "conversations", "outcome": "rate_limited"}
    assert metrics.registry.get_sample_value("igw_reconcile_graph_calls_total", labels) == 2
    assert (metrics.registry.get_sample_value("igw_reconcile_rate_limited_seconds_total", {"account": IG}) or 0) >= 0.5
    assert (await emulator_json(emulator.base_url, "/_emulator/graph-calls"))[IG]["max_per_second"] <= 2


async def test_token_error_pauses_the_account_and_fails_the_pass(
    kafka_settings: KafkaSettings, fast_emulator: RunningEmulator
) -> None:
    """A refused token pauses that account; the other one is reconciled; the pass is incomplete."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    start = int(time.time() * 1000) - 600_000
    emulator = fast_emulator
    await record_history(emulator.base_url, conversation(PAGE, "7101", 1, start_ms=start, platform="messenger"))
    stale = AccountConfig(IG, Flavour.IG_IG, Secret("expired-token"))
    metrics = ReconcileMetrics()
    accounts = (stale, MESSENGER_ACCOUNT)
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=accounts), **FAST)

    report = await run_once(settings, metrics)

    assert not report.complete
    outcomes = {a.account_id: a.outcome for a in report.accounts}
    assert outcomes == {IG: "paused", PAGE: "complete"}
    assert "token_invalid" in report.reason()
    assert metrics.registry.get_sample_value("igw_reconcile_account_paused", {"account": IG}) == 1
    assert report.recovered == 1


async def test_dropped_subscription_sets_the_metric_the_alert_reads(
    kafka_settings: KafkaSettings, fast_emulator: RunningEmulator
) -> None:
    """When Meta drops the app, igw_subscription_active falls to 0 (the app's objects too); 1 once back."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    emulator = fast_emulator
    metrics = ReconcileMetrics()
    base = reconcile_settings(kafka_settings, emulator.client_settings(), **FAST)
    settings = dataclasses.replace(base, app_id=READS.app_id, app_token=Secret(f"{READS.app_id}|{READS.app_secret}"))
    assert (await run_once(settings, metrics)).subscriptions == {IG: True, "100000000000002": True, PAGE: True}
    assert metrics.registry.get_sample_value("igw_app_subscription_active", {"object": "instagram"}) == 1

    await emulator_json(emulator.base_url, "/_emulator/subscriptions", {"subscribed": False})
    report = await run_once(settings, metrics)

    assert report.complete  # the pass itself completed; the summary names what is missing
    assert "webhook subscription MISSING" in report.summary()
    for account in (IG, PAGE):
        assert metrics.registry.get_sample_value("igw_subscription_active", {"account": account}) == 0
    assert metrics.registry.get_sample_value("igw_app_subscription_active", {"object": "page"}) == 0

    await emulator_json(emulator.base_url, "/_emulator/subscriptions", {"account_id": IG, "subscribed": True})
    await run_once(settings, metrics)
    assert metrics.registry.get_sample_value("igw_subscription_active", {"account": IG}) == 1


async def test_message_edit_standing_for_a_new_message_is_hydrated(
    kafka_settings: KafkaSettings,
    gateway_client: GatewayClient,
    fast_emulator: RunningEmulator,
    topic_reader: TopicReader,
) -> None:
    """A message_edit with num_edit 0 and neither sender nor text becomes the complete message event, once."""
    emulator = fast_emulator
    start = int(time.time() * 1000) - 60_000
    message = Message(IG, "5301", "aWdf-new-5301", start, "Is this in stock?")
    await record_history(emulator.base_url, [message])
    edit_item = {"recipient": {"id": IG}, "timestamp": start, "message_edit": {"mid": message.mid, "num_edit": 0}}
    body = orjson.dumps({"object": "instagram", "entry": [{"id": IG, "time": start, "messaging": [edit_item]}]})
    assert (await post_signed(gateway_client, body)).status == 200
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), **FAST)

    report = await run_once(settings)

    assert report.hydrated == 1
    assert report.recovered == 0  # the conversation pass found it published already
    records = await topic_reader(kafka_settings.topic("messages"), expect=2, settle=0.3)
    hydrated = [orjson.loads(r.value) for r in records if b'"message_lookup"' in r.value]
    assert len(records) == 2
    assert len(hydrated) == 1
    assert hydrated[0]["type"] == "message"
    assert hydrated[0]["sender_id"] == "5301"
    assert hydrated[0]["message"]["text"] == "Is this in stock?"
    assert (await run_once(settings)).hydrated == 0


async def test_unchanged_conversations_are_not_read_again(
    kafka_settings: KafkaSettings, fast_emulator: RunningEmulator
) -> None:
    """In the running loop a conversation compared completely is read again only once it has a new message."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    emulator = fast_emulator
    start = int(time.time() * 1000) - 600_000
    await record_history(
        emulator.base_url, [*conversation(IG, "5401", 2, start_ms=start), *conversation(IG, "5402", 2, start_ms=start)]
    )
    settings = reconcile_settings(
        kafka_settings,
        emulator.client_settings(accounts=(IG_ACCOUNT,)),
        expand_messages=False,
        interval_seconds=0.2,
        **FAST,
    )
    stop = asyncio.Event()
    passes: asyncio.Queue[PassReport] = asyncio.Queue()
    task = asyncio.create_task(run_reconcile(settings, stop, passes=passes, serve_http=False))
    try:
        first = await asyncio.wait_for(passes.get(), 20)
        assert (first.recovered, first.accounts[0].conversations) == (4, 2)
        after_first = (await emulator_json(emulator.base_url, "/_emulator/graph-calls"))[IG]["calls"]
        second = await asyncio.wait_for(passes.get(), 20)
        assert (second.recovered, second.accounts[0].conversations) == (0, 0)
        after_second = (await emulator_json(emulator.base_url, "/_emulator/graph-calls"))[IG]["calls"]
        assert after_second - after_first == 2  # the listing and subscribed_apps; no conversation read
        await record_history(emulator.base_url, [Message(IG, "5401", "aWdf-new-5401", int(time.time() * 1000), "?")])
        third = await asyncio.wait_for(passes.get(), 20)
        assert (third.recovered, third.accounts[0].conversations) == (1, 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.mark.parametrize(
    ("failure", "outcome", "reason"),
    [
        ({"code": 80002}, "throttled", "rate_limited"),
        ({"http_status": 503}, "failed", "transient"),
        ({"code": 200, "subcode": 2534041}, "paused", "account_blocked"),
    ],
)
async def test_each_way_meta_fails_ends_the_pass_in_its_state(
    kafka_settings: KafkaSettings,
    fast_emulator: RunningEmulator,
    failure: dict[str, int],
    outcome: str,
    reason: str,
) -> None:
    """Throttling past the retries backs off, lasting 5xx fails, a blocked account pauses; each says why."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    emulator = fast_emulator
    await emulator_json(emulator.base_url, "/_emulator/graph-failures", {"count": 10, "account_id": IG, **failure})
    settings = reconcile_settings(
        kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), max_attempts=2, **FAST
    )

    report = await run_once(settings)

    assert not report.complete
    assert report.accounts[0].outcome == outcome
    assert reason in report.reason()


async def test_kafka_refusing_the_recovered_events_fails_the_pass_and_loses_nothing(
    kafka_settings: KafkaSettings, fast_emulator: RunningEmulator, topic_reader: TopicReader
) -> None:
    """When Kafka does not take the recovered events the account's pass fails; the next pass publishes them."""
    from consumers.reconcile.delivered import DeliveredIndex
    from consumers.reconcile.graph import GraphReader
    from consumers.reconcile.reconciler import Reconciler
    from consumers.reconcile.service import KafkaPublisher
    from igw.errors import BrokerUnavailable

    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    emulator = fast_emulator
    await record_history(emulator.base_url, conversation(IG, "5501", 2, start_ms=int(time.time() * 1000) - 60_000))
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), **FAST)

    class Refusing:
        async def publish(self, events: object) -> None:
            raise BrokerUnavailable("Kafka did not take 2 recovered event(s): KafkaTimeoutError")

    metrics = ReconcileMetrics()
    index = DeliveredIndex(kafka_settings, kafka_settings.topic("messages"))
    publisher = KafkaPublisher(kafka_settings)
    await index.start()
    await publisher.start()
    try:
        async with GraphReader(settings, metrics) as reader:
            failing = await Reconciler(settings, reader, index, Refusing(), metrics).run_pass()
            assert failing.accounts[0].outcome == "failed"
            assert "Kafka" in failing.reason()
            working = await Reconciler(settings, reader, index, publisher, metrics).run_pass()
    finally:
        await publisher.stop()
        await index.stop()
    assert working.complete
    assert working.recovered == 2
    assert len(await topic_reader(kafka_settings.topic("messages"), expect=2, settle=0.2)) == 2


async def test_a_lone_instagram_token_is_resolved_to_its_account(
    kafka_settings: KafkaSettings, fast_emulator: RunningEmulator, topic_reader: TopicReader
) -> None:
    """IGW_ACCESS_TOKEN alone (account "me"): GET /me names the account whose webhooks the envelopes imitate."""
    await ensure_topics(kafka_settings, ["messages", "postbacks", "events", "deadletter"])
    emulator = fast_emulator
    await record_history(emulator.base_url, conversation(IG, "5601", 1, start_ms=int(time.time() * 1000) - 60_000))
    me = AccountConfig("me", Flavour.IG_IG, IG_ACCOUNT.token)
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=(me,)), **FAST)

    report = await run_once(settings)

    assert report.complete
    assert report.accounts[0].account_id == IG
    assert report.subscriptions == {IG: True}
    [record] = await topic_reader(kafka_settings.topic("messages"), expect=1, settle=0.2)
    assert orjson.loads(record.value)["account_id"] == IG
