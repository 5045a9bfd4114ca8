"""The Grafana dashboard against a real Prometheus scraping a real gateway, agent, analytics and reconcile.

The stack: the session's Tansu broker, ``igw gateway``, ``igw graph-emulator`` standing in for
Meta's Send API and Conversations API, ``igw agent`` (rules agent), ``igw analytics``, ``igw
reconcile`` (a conversation whose webhooks never came), and a ``prometheus`` server scraping the
four every second. Signed webhook traffic goes in; every dashboard query must
return data, every metric a query names must appear on the /metrics page of the job it selects,
Prometheus must hold each igw series under the job that exports it only, and each histogram's
buckets must fit what the run measured (not nearly all in the first bucket, few past the last).

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
from prometheus_client.parser import text_string_to_metric_families

from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.analytics.dashboard import PanelQuery, instantiate, load_queries, selectors
from igw_tools.localbroker import free_port
from tests.plugins.exports import jobs_exporting
from tests.plugins.prometheus import DEPLOY, PrometheusFactory
from tests.plugins.reconcile import Message, record_history
from tests.plugins.stack import IgwStarter, stack_env
from tests.stack_traffic import ACCOUNT as STACK_ACCOUNT
from tests.stack_traffic import feed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECRET = "stack-app-secret"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "igw.json"
FEED_SECONDS = float(os.environ.get("IGW_DASHBOARD_FEED_SECONDS", "6"))
# Histograms of small whole numbers: one event per body is the common case, not a bucket misfit.
DISCRETE_HISTOGRAMS = {"igw_webhook_events_per_request"}
# Sized for what the stack here cannot show: Send API calls go to the local emulator, which answers
# in about a millisecond, where Meta's Graph API takes tens to hundreds (docs/send-api.md).
REMOTE_HISTOGRAMS = {"igw_send_api_duration_seconds"}


async def query(http: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, Any]]:
    async with http.get(f"{prom}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def metrics_page(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        return await resp.text()


def sample_names(text: str) -> set[str]:
    """Every sample name on a /metrics page."""
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def bucket_misfits(text: str, *, min_count: int = 10) -> list[str]:
    """Histogram series of a /metrics page whose buckets do not fit the observations: 90 % or more
    in the first bucket (every quantile is then a guess between 0 and its bound: a flat line), or
    10 % or more past the last finite bound."""
    misfits = []
    for family in text_string_to_metric_families(text):
        if family.type != "histogram" or family.name in DISCRETE_HISTOGRAMS | REMOTE_HISTOGRAMS:
            continue
        series: dict[tuple[tuple[str, str], ...], dict[float, float]] = {}
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                series.setdefault(labels, {})[float(sample.labels["le"])] = sample.value
        for labels, buckets in series.items():
            count = buckets[math.inf]
            if count < min_count:
                continue
            bounds = sorted(buckets)
            first, last_finite = buckets[bounds[0]], buckets[bounds[-2]]
            where = f"{family.name}{dict(labels)}"
            if first >= 0.9 * count:
                misfits.append(f"{where}: {first:g} of {count:g} at or under the first bound {bounds[0]:g}")
            if count - last_finite >= 0.1 * count:
                misfits.append(f"{where}: {count - last_finite:g} of {count:g} past the last bound {bounds[-2]:g}")
    return misfits


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
    env = stack_env(kafka_bootstrap, prefix)
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

        jobs = ("gateway", "agent", "analytics", "reconcile")
        pages = {f"igw-{name}": await metrics_page(http, urls[name]) for name in jobs}
        exposed = {job: sample_names(text) for job, text in pages.items()}
        # Every selector names its job (tests/test_grafana_dashboard.py); that job's page shows the series.
        unknown = {
            f"{q.panel} [{q.ref}]": f"{sel.name} not on the /metrics page of {sorted(sel.values('job') or ())}"
            for q in queries
            for sel in selectors(instantiate(q.expr))
            if not all(sel.name in exposed.get(job, ()) for job in sel.values("job") or ("no job",))
        }
        assert not unknown, unknown

        # What Prometheus holds: every igw series only under the job of the process that exports it.
        held = await query(http, prom, 'count by (__name__, job) ({__name__=~"igw_.+"})')
        misplaced = sorted(
            f"{s['metric']['__name__']} under {s['metric']['job']}"
            for s in held
            if s["metric"]["job"] not in jobs_exporting(s["metric"]["__name__"])
        )
        assert not misplaced, misplaced

        misfits = [misfit for text in pages.values() for misfit in bucket_misfits(text)]
        assert not misfits, misfits

        if os.environ.get("IGW_DASHBOARD_SNAPSHOT"):
            await snapshot(http, prom, queries, started, Path(os.environ["IGW_DASHBOARD_SNAPSHOT"]))
