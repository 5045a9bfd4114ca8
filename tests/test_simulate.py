"""``igw simulate`` sends signed traffic to the real gateway, and what it counts is what lands in Kafka."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from igw.config import KafkaSettings
from igw_tools.commands.simulate import SimulationPlan, simulate
from igw_tools.localbroker import free_port
from tests.plugins.gateway import APP_SECRET
from tests.plugins.kafka import TopicReader
from tests.plugins.tools import run_cli

pytestmark = pytest.mark.kafka


async def test_counts_match_what_lands_in_kafka(
    webhook_url: str, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A mixed, batched run gets 200 for every request and each topic receives the predicted records."""
    plan = SimulationPlan(url=webhook_url, secret=APP_SECRET, count=40, batch=3, rate=0, seed=11, conversations=7)
    report = await simulate(plan)
    assert report.statuses == Counter({"200": 40})
    assert report.failed == 0
    assert report.items_sent == 120
    assert sum(report.expected_topics.values()) == 120
    for suffix in ("messages", "postbacks", "events"):
        expected = report.expected_topics[suffix]
        records = await topic_reader(kafka_settings.topic(suffix), expect=expected, settle=0.3)
        assert len(records) == expected, suffix
    assert len(report.latencies) == 40
    assert 0 < report.percentile(50) <= report.percentile(99) <= max(report.latencies)


async def test_rate_and_duration_bound_the_run(webhook_url: str) -> None:
    """At 40 req/s for 1 s about 40 requests are sent, and the run ends on time."""
    started = time.monotonic()
    report = await simulate(SimulationPlan(url=webhook_url, secret=APP_SECRET, event="read", rate=40, duration=1.0))
    assert time.monotonic() - started < 3.0
    assert 30 <= report.requests <= 42
    assert report.failed == 0


async def test_cli_summary_and_exit_status(webhook_url: str, tmp_path: Path) -> None:
    """The CLI prints status counts and percentiles, exits 0 on success and 1 when the secret is wrong."""
    status, out, _ = await run_cli(
        ["simulate", "--event", "postback", "--count", "5", "--url", webhook_url, "--secret", APP_SECRET, "--quiet"]
    )
    assert status == 0
    assert "200: 5" in out
    assert "p50" in out
    assert "p99" in out
    assert "max" in out
    status, out, _ = await run_cli(
        ["simulate", "--mix", "--count", "4", "--url", webhook_url, "--secret", "wrong", "--json", "--quiet"]
    )
    assert status == 1
    summary = json.loads(out)
    assert summary["statuses"] == {"403": 4}
    assert summary["failed"] == 4
    assert APP_SECRET not in out


async def test_file_is_sent_byte_for_byte(
    webhook_url: str, kafka_settings: KafkaSettings, topic_reader: TopicReader, tmp_path: Path
) -> None:
    """--file sends the file's exact bytes, signed; a body the gateway cannot use lands verbatim on deadletter."""
    body = b'{"object":"instagram","entry":"\\u00e4 not a list \\/"}'
    path = tmp_path / "body.json"
    path.write_bytes(body)
    status, out, err = await run_cli(
        ["simulate", "--file", str(path), "--url", webhook_url, "--secret", APP_SECRET, "--quiet"]
    )
    assert status == 0, out + err
    [record] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert record.value == body


async def test_unreachable_gateway_fails_fast() -> None:
    """With nothing listening, every request is a connection error and the run still ends quickly."""
    url = f"http://127.0.0.1:{free_port()}/api/v1/instagram/webhook"
    started = time.monotonic()
    report = await simulate(SimulationPlan(url=url, secret="s", count=3, rate=0, timeout=2.0))
    assert time.monotonic() - started < 5.0
    assert report.statuses == Counter({"connection-error": 3})
    assert report.failed == 3


def test_echo_flags_reach_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """--app-id and --human-echoes shape the echoes; without --app-id, IGW_APP_ID (as dev.env sets it) is used."""
    from igw_tools.cli import build_parser
    from igw_tools.commands.simulate import _plan_from_args

    monkeypatch.setenv("IGW_APP_ID", "4242")
    args = build_parser().parse_args(["simulate", "--mix", "--secret", "s", "--human-echoes", "0.2"])
    plan = _plan_from_args(args)
    assert (plan.app_id, plan.human_echo_share) == ("4242", 0.2)
    args = build_parser().parse_args(["simulate", "--mix", "--secret", "s", "--app-id", "77"])
    assert _plan_from_args(args).app_id == "77"
    args = build_parser().parse_args(["simulate", "--mix", "--secret", "s", "--human-echoes", "2"])
    with pytest.raises(ValueError, match="--human-echoes"):
        _plan_from_args(args)
