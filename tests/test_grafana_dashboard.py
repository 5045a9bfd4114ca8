"""deploy/grafana: a well-formed provisioned dashboard whose queries read only metrics igw exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Metric

from consumers.analytics.dashboard import instantiate, load_queries, metric_names
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.reconcile.metrics import ReconcileMetrics
from tests.plugins.prometheus import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "igw.json"


def sample_names(families: list[Metric]) -> set[str]:
    """The series names a family shows on /metrics, even before any label child exists."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
    names = set()
    for family in families:
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def exported_names() -> set[str]:
    # Importing the modules registers their metrics in the default registry.
    import consumers.agent_replies.metrics
    import consumers.common.lag
    import consumers.send_api.metrics  # noqa: F401
    import gateway.metrics  # noqa: F401

    private = CollectorRegistry()
    AnalyticsMetrics(private)
    ReconcileMetrics(private)
    return sample_names(list(REGISTRY.collect())) | sample_names(list(private.collect()))


def test_panels_are_well_formed() -> None:
    """Panel ids are unique, every panel has a query, and all use the provisioned datasource uid."""
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == uid and t["expr"] for t in panel["targets"]), panel["title"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "igw.yml").read_text())
    assert provider["providers"][0]["options"]["path"].endswith("/igw")


def test_dashboard_covers_gateway_kafka_and_business() -> None:
    """The dashboard has its gateway, Kafka, agent, business and delivery completeness rows."""
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"}
    assert {"Gateway", "Kafka", "Agent and Send API", "Business", "Delivery completeness"} <= titles


def test_every_query_reads_metrics_igw_exports() -> None:
    """Each metric named in a panel query is defined by the gateway, a consumer or the Send API client."""
    exported = exported_names()
    for query in load_queries(DASHBOARD):
        names = metric_names(instantiate(query.expr))
        assert names, query
        assert names <= exported, f"{query.panel}: {sorted(names - exported)} not exported"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x="y(z)"}[5m])) / on () group_left () b_total', {"a_bucket", "b_total"}),
        ("(time() - max by (account) (c)) / 3600 or vector(0)", {"c"}),
        ("d > 3 * (sum(rate(e[1h] offset 5m)) or vector(1e6))", {"d", "e"}),
    ],
)
def test_metric_names_parser(expr: str, names: set[str]) -> None:
    """Functions, keywords, label lists, strings, durations and numbers are not taken for metrics."""
    assert metric_names(expr) == names


def test_loaded_queries_match_the_file(tmp_path: Path) -> None:
    """Targets nested in collapsed rows are read too."""
    doc = {
        "panels": [{"type": "row", "title": "r", "panels": [{"title": "p", "targets": [{"refId": "A", "expr": "x"}]}]}]
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    assert [q.expr for q in load_queries(path)] == ["x"]
