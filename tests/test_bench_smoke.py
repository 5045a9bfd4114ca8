"""The benchmark's own parts: its signed bodies are what the gateway accepts, and wrk's output parses."""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from bench import envelopes, loadgen, payloads, report
from bench.ports import PortRange, parse_range
from bench.scenarios import SCENARIOS
from consumers.agent_replies.model import parse_event
from consumers.agent_replies.rules import RulesAgent
from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.analytics.aggregate import Aggregator
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.analytics.settings import AnalyticsSettings
from gateway.signature import SignatureVerdict, SignatureVerifier
from igw.normalize import normalize

REPO = Path(__file__).resolve().parent.parent

SECRET = "bench_test_secret"

# Real wrk 4.1.0 runs with bench's Lua script: one against the gateway, one answered 404 throughout.
WRK_OK = """\
Running 2s test @ http://127.0.0.1:59521
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    22.80ms   14.20ms 161.24ms   88.67%
    Req/Sec     2.94k   828.93     4.27k    70.00%
  Latency Distribution
     50%   19.73ms
     75%   25.95ms
     90%   35.34ms
     99%   89.20ms
  5881 requests in 2.02s, 0.86MB read
Requests/sec:   2913.38
Transfer/sec:    438.14KB
BENCH_JSON {"requests":5881,"duration_us":2018620,"non2xx":0,"connect":0,"read":0,"write":0,"timeout":0,\
"p50_us":19734,"p99_us":89203,"max_us":161235}
"""
WRK_404 = """\
Running 1s test @ http://127.0.0.1:18778
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.21ms    1.68ms  19.33ms   90.74%
    Req/Sec     3.80k   690.43     4.93k    60.00%
  Latency Distribution
     50%    1.73ms
     75%    2.58ms
     90%    3.76ms
     99%    8.77ms
  3801 requests in 1.00s, 645.87KB read
  Non-2xx or 3xx responses: 3801
Requests/sec:   3785.59
Transfer/sec:    643.25KB
BENCH_JSON {"requests":3801,"duration_us":1004070,"non2xx":3801,"connect":0,"read":0,"write":0,"timeout":0,\
"p50_us":1734,"p99_us":8766,"max_us":19331}
"""


def test_signer_matches_meta_vectors() -> None:
    """The bench signer reproduces Meta's published X-Hub-Signature-256 vectors."""
    assert payloads.sign(b'{"object":"instagram","entry":[]}', "my_app_secret") == (
        "sha256=a6fe43e7fccbea5be5604ac00da14a47dd4813a83c2f868710cd558b9d0b73ab"
    )
    assert payloads.sign(b"", "my_app_secret") == (
        "sha256=30bb2ab83d5e42814f3d42faeac59cbb9e0ffef97d2c697133115cf266c72177"
    )


@pytest.mark.parametrize("name", sorted(name for name, s in SCENARIOS.items() if s.kind == "webhook"))
def test_scenario_bodies_pass_the_gateway(name: str) -> None:
    """Every body is accepted by the gateway's verifier and normalizes into exactly its counted events."""
    verifier = SignatureVerifier([SECRET])
    for body in SCENARIOS[name].bodies(SECRET):
        assert verifier.verify(body.body, body.signature) is SignatureVerdict.OK
        normalized = normalize(body.body, received_at=1)
        assert normalized.dead_letter is None
        assert len(normalized.events) == body.events


def test_bodies_are_written_the_way_meta_writes_them() -> None:
    """The one-message body is ~600 ASCII bytes with escaped unicode and slashes; the batch holds 1000 items."""
    (one,) = payloads.one_message(SECRET)
    assert 500 <= len(one.body) <= 700
    assert b"\\u00f6" in one.body
    assert b"https:\\/\\/" in one.body
    assert one.body.isascii()
    (batch,) = payloads.batch(SECRET)
    assert batch.events == payloads.BATCH_ITEMS == 1000
    types = {e.type for b in payloads.mixed(SECRET) for e in normalize(b.body, 1).events}
    assert {"message", "postback", "reaction", "read", "change"} <= types


def test_wrk_output_parses() -> None:
    """The Lua done() line of a captured wrk run gives requests, rate and latencies in ms."""
    ok = loadgen.parse_output(WRK_OK)
    assert (ok.requests, ok.ok, ok.socket_errors) == (5881, 5881, 0)
    assert ok.rps == pytest.approx(2913.4, abs=0.5)
    assert (ok.p50_ms, ok.p99_ms, ok.max_ms) == (19.734, 89.203, 161.235)
    failed = loadgen.parse_output(WRK_404)
    assert (failed.ok, failed.non2xx, failed.rps) == (0, 3801, 0)
    with pytest.raises(ValueError, match="BENCH_JSON"):
        loadgen.parse_output("Running 1s test @ http://127.0.0.1:1\n")


def test_delivery_check_flags_missing_events() -> None:
    """Acknowledged events absent from Kafka fail the check; extras within the in-flight bound do not."""
    assert report.Delivery(acknowledged=100, found=164, in_flight_bound=64).ok
    assert not report.Delivery(acknowledged=100, found=99, in_flight_bound=64).ok
    assert not report.Delivery(acknowledged=100, found=200, in_flight_bound=64).ok


async def test_agent_records_are_answered_by_the_clinic_rules_without_handover() -> None:
    """The agent bench's DMs are gateway envelopes, keyed by conversation, each answered with text and no handover."""
    records = envelopes.agent_conversations(3, 4, SECRET)
    assert len(records) == 12
    assert {r.topic for r in records} == {"messages"}
    agent = RulesAgent.from_file(SAMPLE_RULES)
    per_user: dict[str, list[int]] = collections.defaultdict(list)
    for record in records:
        event = parse_event(record.value)
        assert record.key == (event.conversation_id or "").encode()
        assert event.answerable
        reply = await agent.reply(event, [])
        assert reply.text
        assert not reply.handover
        per_user[event.user_id or ""].append(event.timestamp_ms)
    assert envelopes.recipients(records) == dict.fromkeys(per_user, 4)
    # Within a conversation, messages follow the order they were written in.
    assert all(times == sorted(times) for times in per_user.values())


def test_analytics_mix_is_counted_once_each() -> None:
    """The analytics bench's mix holds unique gateway envelopes of many types; the aggregator counts every one."""
    records = envelopes.analytics_mix(3000, SECRET)
    values = [orjson.loads(r.value) for r in records]
    assert len({v["id"] for v in values}) == 3000
    types = collections.Counter(v["type"] for v in values)
    assert {"message", "message_echo", "postback", "reaction", "read", "change", "referral"} <= set(types)
    assert {r.topic for r in records} == {"messages", "postbacks", "events"}
    registry = CollectorRegistry()
    aggregator = Aggregator(AnalyticsSettings(), AnalyticsMetrics(registry))
    for record in records:
        assert aggregator.handle(record.topic, record.value, dict(record.headers))
    counted = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "igw_biz_events"
        for sample in metric.samples
        if sample.name == "igw_biz_events_total"
    )
    assert counted == 3000


def test_replies_check_flags_missing_and_duplicate_replies() -> None:
    """A missing reply or a second reply to a message fails the consumer check; exactly one each passes."""
    expected = {"u1": 2, "u2": 1}
    assert report.Answered(expected, {"u1": 2, "u2": 1}).ok
    missing = report.Answered(expected, {"u1": 2})
    assert (missing.ok, missing.missing, missing.extra) == (False, 1, 0)
    duplicate = report.Answered(expected, {"u1": 3, "u2": 1})
    assert (duplicate.ok, duplicate.missing, duplicate.extra) == (False, 0, 1)
    stranger = report.Answered(expected, {"u1": 2, "u2": 1, "u3": 1})
    assert not stranger.ok
    assert "FAILED" in stranger.describe()


def test_summary_line_keeps_its_keys_and_appends_the_consumers() -> None:
    """The last line keeps the webhook keys in order and ends with the consumer rates, na when not run."""
    line = report.summary_line([])
    keys = [part.split("=")[0] for part in line.split()]
    assert keys == [
        "gateway_rps",
        "ceiling_rps",
        "baseline_rps",
        "ratio_ceiling",
        "ratio_baseline",
        "p99_ms",
        "batch_events_per_s",
        "agent_replies_per_s",
        "agent_replies_per_s_1conv",
        "analytics_events_per_s",
        "floor_rps",
        "ratio_floor",
    ]
    assert line.endswith("agent_replies_per_s_1conv=na analytics_events_per_s=na floor_rps=na ratio_floor=na")


def test_port_range_hands_out_free_ports_of_the_range_only() -> None:
    """With a range, ports come from it in turn and a port in use is skipped."""
    assert parse_range("19300-19302") == (19300, 19302)
    with pytest.raises(ValueError, match="port range"):
        parse_range("19302-19300")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        ports = PortRange((port, port + 1))
        taken = {ports.take(), ports.take()}
        assert taken == {port + 1}


def _run_bench(*args: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bench.harness", "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(180)
@pytest.mark.kafka
def test_agent_scenario_runs_and_checks_every_reply() -> None:
    """`bench/run --scenario agent` runs igw agent and the emulator as processes and checks each reply."""
    out = _run_bench(
        "--scenario",
        "agent",
        "--agent-stores",
        "memory",
        "--agent-conversations",
        "50",
        "--agent-messages",
        "2",
        "--agent-sequential",
        "30",
        timeout=170,
    )
    assert "ok: 100 replies, each exactly once" in out
    assert "ok: 30 replies, each exactly once" in out
    last = out.strip().splitlines()[-1]
    assert re.search(r" agent_replies_per_s=\d+ agent_replies_per_s_1conv=\d+ analytics_events_per_s=na ", last), last


@pytest.mark.timeout(180)
@pytest.mark.kafka
def test_analytics_scenario_runs_and_counts_every_event() -> None:
    """`bench/run --scenario analytics` runs igw analytics as a process and checks every event was counted once."""
    out = _run_bench("--scenario", "analytics", "--analytics-events", "20000", timeout=170)
    assert "ok: 20000 events, each exactly once" in out
    last = out.strip().splitlines()[-1]
    assert re.search(r" agent_replies_per_s=na agent_replies_per_s_1conv=na analytics_events_per_s=\d+ ", last), last


@pytest.mark.timeout(180)
@pytest.mark.kafka
def test_floor_and_gateway_publish_the_same_records_and_are_compared() -> None:
    """The floor (aiohttp + igw's publish path) and the gateway both pass the delivery check, and the
    summary compares them."""
    out = _run_bench("--scenario", "one", "--servers", "floor,gateway", "--python-load", timeout=170)
    assert re.search(r"round 1 \(d\) aiohttp \+ publish .* req/s", out), out
    assert out.count("delivery check: ok") == 2, out
    last = out.strip().splitlines()[-1]
    assert re.search(r"^gateway_rps=\d+ ceiling_rps=na .* floor_rps=\d+ ratio_floor=\d+\.\d\d$", last), last
