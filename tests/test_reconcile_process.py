"""``igw reconcile`` as operators run it: the continuous loop, ``--once`` exit codes, replicas sharing Redis."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import orjson
import pytest

from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.reconciler import PassReport
from consumers.reconcile.service import run_reconcile
from igw.config import KafkaSettings
from igw.topics import ensure_topics
from igw_tools.graph_conversations import ConversationsConfig
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.agent import REDIS_URL
from tests.plugins.gateway import GatewayClient, post_signed
from tests.plugins.graph_emulator import IG_ACCOUNT, TEST_ACCOUNTS, StartEmulator
from tests.plugins.kafka import TopicReader
from tests.plugins.reconcile import Message, emulator_json, reconcile_environ, reconcile_settings, record_history

pytestmark = pytest.mark.kafka

IG = IG_ACCOUNT.account_id
TOPICS = ["messages", "postbacks", "events", "deadletter"]


def accounts_file(tmp_path: Path, *, token: str = IG_ACCOUNT.token.value) -> str:
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps([{"account_id": IG, "flavour": "ig_ig", "token": token}]))
    return str(path)


async def igw(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "igw_tools.cli",
        *args,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_once_exits_0_when_complete_and_1_with_a_reason(
    kafka_settings: KafkaSettings, start_graph_emulator: StartEmulator, tmp_path: Path
) -> None:
    """``igw reconcile --once`` prints the pass in one line; a refused token makes it exit 1 saying why."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig())
    await ensure_topics(kafka_settings, TOPICS)
    now = int(time.time() * 1000)
    await record_history(emulator.base_url, [Message(IG, "6001", "aWdf-6001", now - 5000, "Hello?")])
    env = reconcile_environ(kafka_settings, emulator.base_url, accounts_file(tmp_path))

    status, out, err = await igw("reconcile", "--once", env=env)

    assert status == 0, err
    summary = "igw reconcile: 1 account(s), 1 conversation(s), 1 inbound message(s) checked, 1 recovered"
    assert out.strip().startswith(summary)

    env = reconcile_environ(kafka_settings, emulator.base_url, accounts_file(tmp_path, token="revoked"))
    status, out, err = await igw("reconcile", "--once", env=env)
    assert status == 1
    reason = [line for line in err.splitlines() if line.startswith("igw reconcile: incomplete:")]
    assert len(reason) == 1
    assert f"account {IG}: paused" in reason[0]
    assert "token_invalid" in reason[0]
    assert "revoked" not in out + err

    status, _, err = await igw("reconcile", "--once", env={**env, "IGW_RECONCILE_LOOKBACK_SECONDS": "5"})
    assert status == 2
    assert "IGW_RECONCILE_LOOKBACK_SECONDS" in err


async def test_continuous_passes_and_quick_hydration(
    kafka_settings: KafkaSettings,
    gateway_client: GatewayClient,
    start_graph_emulator: StartEmulator,
    topic_reader: TopicReader,
) -> None:
    """The loop runs passes; between them a message_edit standing for a new message is hydrated within seconds."""
    emulator = await start_graph_emulator(
        EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig(read_rate_per_second=100)
    )
    await ensure_topics(kafka_settings, TOPICS)
    settings = reconcile_settings(
        kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), interval_seconds=60, rate_per_second=50
    )
    stop = asyncio.Event()
    passes: asyncio.Queue[PassReport] = asyncio.Queue()
    metrics = ReconcileMetrics()
    task = asyncio.create_task(run_reconcile(settings, stop, passes=passes, metrics=metrics, serve_http=False))
    try:
        first = await asyncio.wait_for(passes.get(), 20)
        assert first.complete
        now = int(time.time() * 1000)
        message = Message(IG, "6101", "aWdf-6101", now, "Do you deliver?")
        await record_history(emulator.base_url, [message])
        edit = {"recipient": {"id": IG}, "timestamp": now, "message_edit": {"mid": message.mid, "num_edit": 0}}
        body = orjson.dumps({"object": "instagram", "entry": [{"id": IG, "time": now, "messaging": [edit]}]})
        assert (await post_signed(gateway_client, body)).status == 200
        records = await topic_reader(kafka_settings.topic("messages"), expect=2, timeout=10)
        hydrated = [orjson.loads(r.value) for r in records if b"message_lookup" in r.value]
        assert len(hydrated) == 1
        assert hydrated[0]["message"]["text"] == "Do you deliver?"
        labels = {"account": IG, "outcome": "published"}
        assert metrics.registry.get_sample_value("igw_reconcile_hydrations_total", labels) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.mark.redis
async def test_replicas_share_two_reads_per_second_through_redis(
    kafka_settings: KafkaSettings, start_graph_emulator: StartEmulator, redis_prefix: str
) -> None:
    """Two replicas reading one account at once stay within Meta's 2 reads per second together (the emulator counts)."""
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig())
    await ensure_topics(kafka_settings, TOPICS)
    now = int(time.time() * 1000)
    history = [Message(IG, f"62{u:02d}", f"aWdf-62{u:02d}", now - 60_000 + u, "hi") for u in range(4)]
    await record_history(emulator.base_url, history)
    settings = reconcile_settings(
        kafka_settings,
        emulator.client_settings(accounts=(IG_ACCOUNT,)),
        page_size=1,
        redis_url=REDIS_URL,
        rate_limit_key_prefix=redis_prefix,
    )
    reports = await asyncio.gather(
        *(asyncio.wait_for(run_reconcile(settings, asyncio.Event(), once=True), 60) for _ in range(2))
    )
    assert all(r is not None and r.complete for r in reports)
    stats = (await emulator_json(emulator.base_url, "/_emulator/graph-calls"))[IG]
    # Each replica: 4 listing pages of one conversation, and subscribed_apps.
    assert stats["calls"] >= 10
    assert stats["throttled"] == 0
    assert stats["max_per_second"] <= 2


async def test_simulate_drops_webhooks_and_reconcile_recovers_them(
    kafka_settings: KafkaSettings,
    webhook_url: str,
    start_graph_emulator: StartEmulator,
    topic_reader: TopicReader,
) -> None:
    """``igw simulate --emulator URL --drop 0.3`` keeps every message in the emulator; reconcile finds the dropped."""
    from igw_tools.commands.simulate import SimulationPlan, simulate
    from tests.plugins.gateway import APP_SECRET

    emulator = await start_graph_emulator(
        EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig(read_rate_per_second=100)
    )
    plan = SimulationPlan(
        url=webhook_url,
        secret=APP_SECRET,
        event="message",
        account_id=IG,
        conversations=5,
        count=30,
        rate=0,
        seed=5,
        emulator_url=emulator.base_url,
        drop=0.3,
    )
    report = await simulate(plan)
    assert report.failed == 0
    assert report.recorded == 30
    assert 0 < report.dropped < 30
    settings = reconcile_settings(kafka_settings, emulator.client_settings(accounts=(IG_ACCOUNT,)), rate_per_second=50)

    recovered = await asyncio.wait_for(run_reconcile(settings, asyncio.Event(), once=True), 60)

    assert recovered is not None
    assert recovered.recovered == report.dropped
    records = await topic_reader(kafka_settings.topic("messages"), expect=30, settle=0.3)
    assert len({orjson.loads(r.value)["id"] for r in records}) == len(records) == 30


async def test_a_failing_pass_does_not_stop_the_loop(
    kafka_settings: KafkaSettings, start_graph_emulator: StartEmulator
) -> None:
    """Without the messages topic a pass fails; the loop keeps going and the next pass, once it exists, completes."""
    emulator = await start_graph_emulator(
        EmulatorConfig(accounts=TEST_ACCOUNTS), ConversationsConfig(read_rate_per_second=100)
    )
    settings = reconcile_settings(
        kafka_settings,
        emulator.client_settings(accounts=(IG_ACCOUNT,)),
        interval_seconds=0.3,
        rate_per_second=50,
        create_topics=False,
    )
    stop = asyncio.Event()
    passes: asyncio.Queue[PassReport] = asyncio.Queue()
    task = asyncio.create_task(run_reconcile(settings, stop, passes=passes, serve_http=False))
    try:
        await asyncio.sleep(1.0)
        assert passes.empty()
        assert not task.done()
        await ensure_topics(kafka_settings, TOPICS)
        report = await asyncio.wait_for(passes.get(), 20)
        assert report.complete
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_no_token_or_secret_in_a_debug_run(
    kafka_settings: KafkaSettings, start_graph_emulator: StartEmulator, tmp_path: Path
) -> None:
    """Debug logs of a pass where Meta echoes the token in its error show no token, app secret or app token."""
    from tests.plugins.graph_emulator import MESSENGER_ACCOUNT

    reads = ConversationsConfig(app_secret="reconcile-app-secret-31d4")
    emulator = await start_graph_emulator(EmulatorConfig(accounts=TEST_ACCOUNTS), reads)
    await ensure_topics(kafka_settings, TOPICS)
    token, proof_secret = MESSENGER_ACCOUNT.token.value, MESSENGER_ACCOUNT.app_secret
    assert proof_secret is not None
    path = tmp_path / "accounts.json"
    path.write_bytes(
        orjson.dumps(
            [
                {
                    "account_id": MESSENGER_ACCOUNT.account_id,
                    "flavour": "messenger",
                    "token": token,
                    "app_secret": proof_secret.value,
                }
            ]
        )
    )
    echo = {"count": 1, "code": 190, "message": f"Invalid OAuth access token - Cannot parse access token {token}"}
    await emulator_json(emulator.base_url, "/_emulator/graph-failures", echo)
    app_token = f"{reads.app_id}|{reads.app_secret}"
    env = {
        **reconcile_environ(kafka_settings, emulator.base_url, str(path)),
        "IGW_APP_ID": reads.app_id,
        "IGW_APP_ACCESS_TOKEN": app_token,
    }

    status, out, err = await igw("reconcile", "--once", "--log-level", "debug", env=env)

    assert status == 1
    assert "token_invalid" in err
    for secret in (token, proof_secret.value, app_token, reads.app_secret or ""):
        assert secret not in out + err
