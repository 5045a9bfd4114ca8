"""The Grafana dashboard against a real Prometheus scraping a real gateway, agent and analytics.

The stack: the session's Tansu broker, ``igw gateway``, ``igw graph-emulator`` standing in for
Meta's Send API and Conversations API, ``igw agent`` (rules agent), ``igw analytics``, ``igw
reconcile`` (a conversation whose webhooks never came), and a ``prometheus`` server scraping the
four every second. Signed webhook traffic goes in; every dashboard query must
return data, and every metric a query names must appear on one of the three /metrics pages.

``IGW_DASHBOARD_SNAPSHOT=<file.json>`` also saves each panel's series over the run (used by
``scripts/render-dashboard`` to draw docs/dashboard.png); ``IGW_DASHBOARD_FEED_SECONDS`` sets
how long traffic is fed (default 6).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.analytics.dashboard import PanelQuery, instantiate, load_queries, metric_names
from igw_tools.localbroker import free_port
from tests.plugins.prometheus import DEPLOY, PrometheusFactory
from tests.plugins.reconcile import Message, record_history
from tests.plugins.stack import IgwStarter
from tests.stack_traffic import ACCOUNT as STACK_ACCOUNT
from tests.stack_traffic import feed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECRET = "stack-app-secret"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "igw.json"
FEED_SECONDS = float(os.environ.get("IGW_DASHBOARD_FEED_SECONDS", "6"))


def common_env(bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "IGW_TOPIC_PREFIX": prefix,
        # Tansu does not support aiokafka's idempotent producer; production keeps it on.
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_ACKS": "all",
        "IGW_TOPIC_PARTITIONS": "3",
        "IGW_LOG_FORMAT": "text",
        # Tansu holds a JoinGroup for part of the rebalance timeout: keep joins quick in tests.
        "IGW_CONSUMER_MAX_POLL_INTERVAL_MS": "2000",
        "IGW_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "IGW_CONSUMER_HEARTBEAT_MS": "500",
        "IGW_CONSUMER_POLL_TIMEOUT_MS": "100",
        "IGW_CONSUMER_LAG_INTERVAL_SECONDS": "1",
        "IGW_SHUTDOWN_TIMEOUT_SECONDS": "3",
    }


async def query(http: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, Any]]:
    async with http.get(f"{prom}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def exposed_names(http: aiohttp.ClientSession, urls: list[str]) -> set[str]:
    """Every sample name on the given /metrics pages."""
    names: set[str] = set()
    for url in urls:
        async with http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def snapshot(http: aiohttp.ClientSession, prom: str, queries: list[PanelQuery], start: float, path: Path) -> None:
    panels: dict[str, list[dict[str, Any]]] = {}
    end = time.time()
    # What Grafana would substitute for a 1 s scrape at a 1 s step: a short rate window, the run as range.
    run = f"{int(end - start) + 1}s"
    for q in queries:
        expr = instantiate(q.expr, rate_interval="10s", range_=run)
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
        async with http.get(f"{prom}/api/v1/query_range", params=params) as resp:
            body = await resp.json()
        panels.setdefault(q.panel, []).append(
            {"ref": q.ref, "legend": q.legend, "unit": q.unit, "expr": q.expr, "series": body["data"]["result"]}
        )
    await asyncio.to_thread(path.write_text, json.dumps({"start": start, "panels": panels}, indent=1))


async def test_every_dashboard_panel_returns_data(
    kafka_bootstrap: str, igw_stack: IgwStarter, prometheus_factory: PrometheusFactory, tmp_path: Path
) -> None:
    """Fed signed traffic, each panel's PromQL returns data and names only metrics the processes export."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = common_env(kafka_bootstrap, prefix)
    ports = {name: free_port() for name in ("gateway", "emulator", "agent", "analytics", "reconcile")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    started = time.time()

    emulator = igw_stack(
        "graph-emulator", ["graph-emulator", "--port", str(ports["emulator"]), "--no-window"], env, url=urls["emulator"]
    )
    gateway_env = {**env, "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "stack-verify", "INSTAGRAM_APP_SECRET": SECRET}
    igw_stack(
        "gateway",
        ["gateway", "--host", "127.0.0.1", "--port", str(ports["gateway"])],
        gateway_env,
        url=urls["gateway"],
        ready_path="/readyz",
    )
    agent_env = {
        **env,
        "IGW_AGENT_GROUP": f"agent-{prefix}",
        "IGW_METRICS_HOST": "127.0.0.1",
        "IGW_ACCESS_TOKEN": "stack-token",
        "IGW_GRAPH_BASE_URL": emulator.url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator.url,
        "IGW_RULES_FILE": str(SAMPLE_RULES),
        "IGW_SEND_MAX_ATTEMPTS": "1",
    }
    igw_stack(
        "agent", ["agent", "--metrics-port", str(ports["agent"])], agent_env, url=urls["agent"], ready_path="/readyz"
    )
    analytics_env = {**env, "IGW_ANALYTICS_GROUP": f"analytics-{prefix}", "IGW_METRICS_HOST": "127.0.0.1"}
    igw_stack(
        "analytics",
        ["analytics", "--metrics-port", str(ports["analytics"])],
        analytics_env,
        url=urls["analytics"],
        ready_path="/readyz",
    )
    # A conversation Meta kept but whose webhooks never came: reconcile recovers it.
    now = int(time.time() * 1000)
    lost = [Message(STACK_ACCOUNT, "9900000000000001", f"aWdf-lost-{i}", now - 60_000 + i, "hello?") for i in range(3)]
    await record_history(emulator.url, lost)
    accounts = tmp_path / "accounts.json"
    accounts.write_text(f'[{{"account_id": "{STACK_ACCOUNT}", "flavour": "ig_ig", "token": "stack-token"}}]')
    reconcile_env = {
        **env,
        "IGW_METRICS_HOST": "127.0.0.1",
        "IGW_ACCOUNTS_FILE": str(accounts),
        "IGW_GRAPH_BASE_URL": emulator.url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator.url,
        "IGW_RECONCILE_INTERVAL_SECONDS": "2",
        "IGW_RECONCILE_MIN_AGE_SECONDS": "0",
    }
    igw_stack(
        "reconcile",
        ["reconcile", "--metrics-port", str(ports["reconcile"])],
        reconcile_env,
        url=urls["reconcile"],
        ready_path="/readyz",
    )
    targets = {f"igw-{name}": f"127.0.0.1:{ports[name]}" for name in ("gateway", "agent", "analytics", "reconcile")}
    prom = prometheus_factory(targets).url

    async with aiohttp.ClientSession() as http:
        # One Send API call fails as Meta answers for a user it cannot find: the errors panel has data.
        failure = {"count": 1, "code": 100, "subcode": 2534014}
        async with http.post(f"{emulator.url}/_emulator/failures", json=failure) as resp:
            assert resp.status == 200
        # Traffic starts once Prometheus has a first sample of every target, so rates see it all.
        deadline = time.monotonic() + 20
        while len(await query(http, prom, "up == 1")) < len(targets):
            assert time.monotonic() < deadline, "prometheus did not scrape every target"
            await asyncio.sleep(0.2)
        # Two more lost messages once Prometheus watches: the next pass counts them, so rates see it.
        now = int(time.time() * 1000)
        later = [Message(STACK_ACCOUNT, "9900000000000002", f"aWdf-later-{i}", now + i, "anyone?") for i in range(2)]
        await record_history(emulator.url, later)
        posted = await feed(f"{urls['gateway']}/api/v1/instagram/webhook", SECRET, FEED_SECONDS)
        assert posted > 0

        queries = load_queries(DASHBOARD)
        assert len(queries) >= 25
        missing: dict[str, str] = {}
        deadline = time.monotonic() + 40
        while True:
            missing = {}
            for q in queries:
                if not has_finite_value(await query(http, prom, instantiate(q.expr))):
                    missing[f"{q.panel} [{q.ref}]"] = q.expr
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert not missing, f"panels without data: {json.dumps(missing, indent=1)}"

        exposed = await exposed_names(http, [urls[name] for name in ("gateway", "agent", "analytics", "reconcile")])
        unknown = {q.panel: sorted(metric_names(instantiate(q.expr)) - exposed) for q in queries}
        assert not {panel: names for panel, names in unknown.items() if names}, unknown

        if os.environ.get("IGW_DASHBOARD_SNAPSHOT"):
            await snapshot(http, prom, queries, started, Path(os.environ["IGW_DASHBOARD_SNAPSHOT"]))
