"""Nothing lost even when Meta drops it: the whole stack as operators run it.

``igw graph-emulator`` holds the history: ``CONVERSATIONS`` conversations of 10 inbound messages
each (default 100, so 1,000 messages). ``igw gateway`` receives the webhooks of 90 % of them; the
other 10 % Meta "never delivers": four in ten in whole conversations (a fifth of those a person
then answered in the app, with no webhook either), the rest one message here and there.
``igw reconcile --once`` runs, then ``igw agent`` starts and reads everything. Checked:

- every one of the messages is on the messages topic exactly once, by the event id the webhook
  path gives it (computed with ``igw.normalize.normalize`` from its webhook body);
- the agent answers each message once, recovered ones included, except in the conversations a
  person already answered (no reply there at all);
- a second pass publishes nothing; reads never exceed 2 per second per account (the emulator
  counts every call);
- when Meta drops the app's subscription, the running ``igw reconcile`` exports
  ``igw_subscription_active{account} 0``, which the alert IgwWebhookSubscriptionRemoved reads.

``IGW_RECONCILE_STACK_CONVERSATIONS=1000`` runs it with 1,000 conversations (10,000 messages),
``IGW_RECONCILE_STACK_EXPAND=false`` with one Conversations API call per conversation; the pass
time is printed either way (docs/reconcile.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from gateway.signature import sign
from igw.normalize import normalize
from igw_tools.localbroker import free_port
from tests.plugins.kafka import read_topic
from tests.plugins.reconcile import Message, emulator_json, record_history
from tests.plugins.stack import IgwStarter, stack_env

ACCOUNT = "17841400000000777"
TOKEN = "IGstack-token-reconcile-0001"
SECRET = "stack-reconcile-secret"
CONVERSATIONS = int(os.environ.get("IGW_RECONCILE_STACK_CONVERSATIONS", "100"))
# "false": one Conversations API call per conversation instead of field expansion (for measuring).
EXPAND = os.environ.get("IGW_RECONCILE_STACK_EXPAND", "true")
# Two passes at Meta's 2 reads/s, the agent answering every message: bounded by the size asked for.
_SECONDS = 120 + (2 * CONVERSATIONS / 1.9 if EXPAND == "false" else 0.3 * CONVERSATIONS)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(_SECONDS)]
PER_CONVERSATION = 10


def build_history(now_ms: int) -> tuple[list[Message], set[str], set[str]]:
    """The messages, the mids Meta never delivers, and the users a person answered (no webhook)."""
    rng = random.Random(16)
    base = now_ms - 40 * 60_000
    messages = [
        Message(ACCOUNT, f"31{u:06d}", f"aWdf-stack-{u}-{i}", base + i * 120_000 + u * 10, f"Question {i}")
        for u in range(CONVERSATIONS)
        for i in range(PER_CONVERSATION)
    ]
    total_drops = len(messages) // 10
    whole = (total_drops * 4 // 10) // PER_CONVERSATION  # conversations Meta dropped entirely
    by_user: dict[str, list[Message]] = {}
    for message in messages:
        by_user.setdefault(message.user, []).append(message)
    users = list(by_user)
    dropped = {m.mid for user in users[:whole] for m in by_user[user]}
    answered_by_person = set(users[: max(1, whole // 5)])
    for user in rng.sample(users[whole:], total_drops - len(dropped)):
        dropped.add(rng.choice(by_user[user]).mid)
    return messages, dropped, answered_by_person


async def deliver(url: str, bodies: list[bytes]) -> None:
    async with aiohttp.ClientSession() as http:

        async def post(body: bytes) -> None:
            headers = {"X-Hub-Signature-256": sign(body, SECRET), "Content-Type": "application/json"}
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200

        for start in range(0, len(bodies), 50):
            await asyncio.gather(*(post(b) for b in bodies[start : start + 50]))


async def igw_once(env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "igw_tools.cli",
        "reconcile",
        "--once",
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 1500)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.json"
    path.write_bytes(orjson.dumps([{"account_id": ACCOUNT, "flavour": "ig_ig", "token": TOKEN}]))
    return path


async def test_nothing_lost(kafka_bootstrap: str, igw_stack: IgwStarter, accounts: Path, tmp_path: Path) -> None:
    """Every message in Kafka once by its webhook id; answered once; none where a person answered; 2 reads/s at most."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = stack_env(kafka_bootstrap, prefix)
    ports = {name: free_port() for name in ("gateway", "emulator", "agent", "reconcile")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    emulator = igw_stack(
        "graph-emulator",
        ["graph-emulator", "--port", str(ports["emulator"]), "--accounts-file", str(accounts), "--rate-ig", "100000"],
        env,
        url=urls["emulator"],
    )
    igw_stack(
        "gateway",
        ["gateway", "--host", "127.0.0.1", "--port", str(ports["gateway"])],
        {**env, "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "stack-verify", "INSTAGRAM_APP_SECRET": SECRET},
        url=urls["gateway"],
        ready_path="/readyz",
    )
    graph = {
        "IGW_ACCOUNTS_FILE": str(accounts),
        "IGW_GRAPH_BASE_URL": emulator.url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator.url,
    }
    reconcile_env = {
        **env,
        **graph,
        "IGW_RECONCILE_LOOKBACK_SECONDS": "3600",
        "IGW_RECONCILE_MIN_AGE_SECONDS": "0",
        "IGW_RECONCILE_EXPAND_MESSAGES": EXPAND,
    }

    now_ms = int(time.time() * 1000)
    messages, dropped, person_users = build_history(now_ms)
    people = [
        Message(ACCOUNT, user, f"aWdf-person-{user}", now_ms - 60_000, "A person answers", outbound=True)
        for user in sorted(person_users)
    ]
    await record_history(emulator.url, [*messages, *people])
    await deliver(
        f"{urls['gateway']}/api/v1/instagram/webhook", [m.webhook() for m in messages if m.mid not in dropped]
    )
    expected_ids = {m.mid: normalize(m.webhook(), received_at=now_ms).events[0].id for m in messages}

    status, out, err, seconds = await igw_once(reconcile_env)

    assert status == 0, out + err
    print(f"\nreconcile --once, {CONVERSATIONS} conversations: {seconds:.1f} s: {out.strip()}")  # noqa: T201
    assert f"{len(dropped)} recovered" in out
    topic = f"{prefix}.messages"
    records = await read_topic(kafka_bootstrap, topic, expect=len(messages), timeout=60, settle=1.0)
    ids = Counter(orjson.loads(r.value)["id"] for r in records)
    assert len(records) == len(messages)
    assert set(ids) == set(expected_ids.values())
    assert set(ids.values()) == {1}
    calls = (await emulator_json(emulator.url, "/_emulator/graph-calls"))[ACCOUNT]
    print(f"Graph reads: {calls}")  # noqa: T201
    assert calls["throttled"] == 0
    assert calls["max_per_second"] <= 2

    # The agent starts now and reads everything: webhooks and recovered messages alike.
    agent_env = {
        **env,
        **graph,
        "IGW_AGENT_GROUP": f"agent-{prefix}",
        "IGW_METRICS_HOST": "127.0.0.1",
        "IGW_RULES_FILE": str(rules(tmp_path)),
        "IGW_SEND_RATE_IG": "100000",
        "IGW_SEND_MAX_ATTEMPTS": "2",
    }
    igw_stack(
        "agent", ["agent", "--metrics-port", str(ports["agent"])], agent_env, url=urls["agent"], ready_path="/readyz"
    )
    decided = await decisions(kafka_bootstrap, f"{prefix}.replies", set(expected_ids.values()), len(messages) / 20)
    person_mids = {m.mid for m in messages if m.user in person_users}
    outcomes: Counter[tuple[str, str]] = Counter()
    for mid, event_id in expected_ids.items():
        # One decision per message; a replay after a rebalance may only add the ledger's "duplicate".
        made = {d for d in decided.get(event_id, set()) if d != ("skipped", "duplicate")}
        assert len(made) == 1, (mid, decided.get(event_id))
        [decision] = made
        outcomes[decision] += 1
        assert decision == (("skipped", "already_answered") if mid in person_mids else ("sent", "replied")), mid
    sends = await emulator_json(emulator.url, "/_emulator/messages")
    sent_to = Counter(s["recipient_id"] for s in sends if s["kind"] == "message")
    assert not person_users & set(sent_to)
    # Exactly one reply per message answered, recovered ones included (the emulator counts the sends).
    assert sum(sent_to.values()) == len(messages) - len(person_mids)
    assert all(sent_to[user] == PER_CONVERSATION for user in {m.user for m in messages} - person_users)
    recovered_answered = len(dropped - person_mids)
    print(f"agent: {dict(outcomes)}; recovered and answered once: {recovered_answered}")  # noqa: T201

    status, out, err, _ = await igw_once(reconcile_env)
    assert status == 0, out + err
    assert " 0 recovered" in out
    assert len(await read_topic(kafka_bootstrap, topic, expect=len(messages) + 1, timeout=3)) == len(messages)
    calls = (await emulator_json(emulator.url, "/_emulator/graph-calls"))[ACCOUNT]
    assert calls["max_per_second"] <= 2

    # Meta drops the app: the running process's metric, the one the alert reads, goes to 0.
    watch_env = {**reconcile_env, "IGW_RECONCILE_INTERVAL_SECONDS": "1", "IGW_RECONCILE_LOOKBACK_SECONDS": "60"}
    igw_stack("reconcile", ["reconcile", "--metrics-port", str(ports["reconcile"])], watch_env, url=urls["reconcile"])
    line = f'igw_subscription_active{{account="{ACCOUNT}"}}'
    assert await metric_value(urls["reconcile"], line, 1.0)
    await emulator_json(emulator.url, "/_emulator/subscriptions", {"subscribed": False})
    assert await metric_value(urls["reconcile"], line, 0.0)


async def decisions(bootstrap: str, topic: str, wanted: set[str], timeout: float) -> dict[str, set[tuple[str, str]]]:
    """The agent's (outcome, reason) per inbound event id, read until every wanted event has one."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    found: dict[str, set[tuple[str, str]]] = {}
    await consumer.start()
    try:
        deadline = time.monotonic() + 60 + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if wanted <= found.keys():
                settle_until = settle_until or time.monotonic() + 2.0  # then a moment for extras
                if time.monotonic() >= settle_until:
                    break
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    reply = orjson.loads(record.value)
                    found.setdefault(str(reply["in_reply_to"]), set()).add((reply["outcome"], reply["reason"]))
    finally:
        await consumer.stop()
    return found


def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.json"
    path.write_text('{"version": 1, "rules": [], "fallback": {"text": "Thanks, we read every message."}}')
    return path


async def metric_value(url: str, series: str, wanted: float, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{url}/metrics") as resp:
                for text in (await resp.text()).splitlines():
                    if text.startswith(series + " ") and float(text.split()[-1]) == wanted:
                        return True
            await asyncio.sleep(0.3)
    return False
