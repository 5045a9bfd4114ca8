"""Each process exports only its own signals: the gateway's, the agent's and analytics' /metrics.

``igw gateway``, ``igw agent`` and ``igw analytics`` run as real processes on the suite's broker;
each /metrics must carry its own families and none of the others'. A real Prometheus with the
shipped rules then scrapes the healthy three and no alert may be pending or firing: before each
process owned its registry, the agent and analytics served the gateway's ``igw_producer_ready 0``
and ``IgwProducerNotReady`` went pending at once.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.common.metrics import ConsumerMetrics
from consumers.send_api.metrics import SendApiMetrics
from gateway.metrics import GatewayMetrics
from igw_tools.localbroker import free_port
from tests.plugins.prometheus import PrometheusFactory
from tests.plugins.stack import IgwStarter, stack_env

ROOT = Path(__file__).resolve().parents[1]


def families(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def igw_families(registry: CollectorRegistry) -> set[str]:
    return {name for name in families(registry) if name.startswith("igw_")}


def own_families() -> dict[str, set[str]]:
    """The igw families each process builds, as the processes build them."""
    agent, analytics = CollectorRegistry(), CollectorRegistry()
    AgentMetrics(agent)
    SendApiMetrics(agent)
    ConsumerMetrics(agent, "g")
    AnalyticsMetrics(analytics)
    ConsumerMetrics(analytics, "g")
    gateway = igw_families(GatewayMetrics().registry)
    return {"gateway": gateway, "agent": igw_families(agent), "analytics": igw_families(analytics)}


def _consumer_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ConsumerMetrics(registry, "g")
    return registry


def scrape(url: str) -> tuple[str, set[str]]:
    """The /metrics text at ``url`` and the family names its ``# TYPE`` lines declare."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback test URL
        text = resp.read().decode()
    # prometheus_client names a counter's family without "_total" in TYPE lines of the text format.
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return text, {name.removesuffix("_total") for name in declared}


def prometheus_get(url: str, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=5) as resp:  # noqa: S310 - loopback test URL
        body = orjson.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def test_importing_every_module_registers_no_metric() -> None:
    """``import`` of every gateway, consumers and igw_tools module leaves prometheus_client's global registry empty."""
    code = (
        "import importlib, pkgutil, prometheus_client as p\n"
        "before = set(p.REGISTRY._names_to_collectors)\n"
        "for name in ('igw', 'gateway', 'consumers', 'igw_tools'):\n"
        "    package = importlib.import_module(name)\n"
        "    for m in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "print(sorted(set(p.REGISTRY._names_to_collectors) - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]"


def test_processes_build_disjoint_families() -> None:
    """The gateway's, the agent's and analytics' igw families overlap only in the shared consumer metrics."""
    own = own_families()
    consumer = igw_families(_consumer_registry())
    assert own["gateway"] & own["agent"] == set()
    assert own["gateway"] & own["analytics"] == set()
    assert own["agent"] & own["analytics"] == consumer


@pytest.mark.kafka
def test_each_process_serves_only_its_own_metrics_and_no_alert_fires(
    kafka_bootstrap: str, igw_stack: IgwStarter, prometheus_factory: PrometheusFactory
) -> None:
    """Real gateway, agent and analytics: each /metrics has its own families only; with the shipped rules, no alert."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    env = stack_env(kafka_bootstrap, prefix)
    ports = {name: free_port() for name in ("gateway", "agent", "analytics")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    gateway_env = {**env, "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "own-verify", "INSTAGRAM_APP_SECRET": "own-secret"}
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
        "IGW_ACCESS_TOKEN": "own-token",
        # Nothing is sent in this test: no Graph API is needed behind these.
        "IGW_GRAPH_BASE_URL": "http://127.0.0.1:9",
        "IGW_INSTAGRAM_GRAPH_BASE_URL": "http://127.0.0.1:9",
        "IGW_RULES_FILE": str(SAMPLE_RULES),
    }
    igw_stack("agent", ["agent", "--metrics-port", str(ports["agent"])], agent_env, url=urls["agent"])
    analytics_env = {**env, "IGW_ANALYTICS_GROUP": f"analytics-{prefix}", "IGW_METRICS_HOST": "127.0.0.1"}
    igw_stack(
        "analytics", ["analytics", "--metrics-port", str(ports["analytics"])], analytics_env, url=urls["analytics"]
    )

    own = own_families()
    consumer = igw_families(_consumer_registry())
    served: dict[str, set[str]] = {}
    for name, url in urls.items():
        text, declared = scrape(url)
        served[name] = {family for family in declared if family.startswith("igw_")}
        assert "process_resident_memory_bytes" in declared, f"{name} lacks its own process metrics"
        others = set().union(*(theirs for other, theirs in own.items() if other != name))
        assert served[name] == own[name], (
            f"{name}: missing {own[name] - served[name]}, extra {served[name] - own[name]}"
        )
        assert served[name] & (others - consumer) == set(), f"{name} serves another process's metrics"
        if name != "gateway":
            # The check: `curl -s 127.0.0.1:9101/metrics | grep -c '^igw_producer_ready'` prints 0.
            assert not [line for line in text.splitlines() if line.startswith("igw_producer_ready")], name
    assert {"igw_producer_ready", "igw_spool_bytes", "igw_publish_duration_seconds"} <= served["gateway"]
    assert {"igw_agent_replies", "igw_send_api_requests", "igw_consumer_lag_messages"} <= served["agent"]
    assert {"igw_biz_inbound_messages", "igw_consumer_lag_messages"} <= served["analytics"]
    assert not any(
        f.startswith(("igw_agent_", "igw_send_api_", "igw_biz_", "igw_consumer_")) for f in served["gateway"]
    )

    jobs = {f"igw-{name}": f"127.0.0.1:{port}" for name, port in ports.items()}
    prom = prometheus_factory(jobs).url
    deadline = time.monotonic() + 20
    while len(prometheus_get(prom, "/api/v1/query", query="up == 1")["result"]) < len(jobs):
        assert time.monotonic() < deadline, "prometheus did not scrape every process"
        time.sleep(0.2)
    all_up = time.time()
    # The alert groups evaluate every second here: wait for two rounds after every target was up.
    while True:
        # Groups without alerting rules (the recording group, every 30 s) are listed empty: not waited for.
        groups = [g for g in prometheus_get(prom, "/api/v1/rules", type="alert")["groups"] if g["rules"]]
        evaluated = [_timestamp(group["lastEvaluation"]) for group in groups]
        if groups and min(evaluated) > all_up + 1.5:
            break
        assert time.monotonic() < deadline + 10, f"alert rules not evaluated: {groups}"
        time.sleep(0.2)
    alerts = prometheus_get(prom, "/api/v1/alerts")["alerts"]
    assert alerts == [], f"alerts on a healthy stack: {[(a['labels'], a['state']) for a in alerts]}"


def _timestamp(rfc3339: str) -> float:
    """Prometheus' RFC 3339 times carry nanoseconds; Python reads up to microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()
