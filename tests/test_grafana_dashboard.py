"""deploy/grafana: a well-formed provisioned dashboard whose queries read only metrics igw exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from consumers.analytics.dashboard import instantiate, load_queries, metric_names
from tests.plugins.exports import exported_by_job, job_scope_errors
from tests.plugins.prometheus import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "igw.json"
# Every panel, query and variable reads the datasource the `datasource` variable picks.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def exported_names() -> set[str]:
    return set().union(*exported_by_job().values())


def test_panels_are_well_formed() -> None:
    """Panel ids are unique, every panel has a query, and every panel and query uses the datasource variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == DATASOURCE and t["expr"] for t in panel["targets"]), panel["title"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "igw.yml").read_text())
    assert provider["providers"][0]["options"]["path"].endswith("/igw")


def test_datasource_is_a_variable_and_no_uid_is_hard_coded() -> None:
    """Imported into any Grafana, the dashboard asks for a Prometheus datasource: no datasource uid is written in."""
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    provisioned_uid = provisioned["datasources"][0]["uid"]

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and path:  # a panel's, a query's or a variable's
                    assert value == DATASOURCE, f"{path}: {value}"
                if key == "uid" and path:  # the dashboard's own uid sits at the top
                    assert value == "${datasource}", f"{path}.uid = {value}"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        elif isinstance(node, str):
            assert provisioned_uid not in node, f"{path} names the provisioned datasource uid"

    walk(dashboard, "")


def test_every_query_reads_the_job_that_exports_its_metrics() -> None:
    """Each selector of each panel query and variable query matches the job of the process that exports it."""
    dashboard = json.loads(DASHBOARD.read_text())
    errors = {f"{q.panel} [{q.ref}]": job_scope_errors(q.expr) for q in load_queries(DASHBOARD)}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            [inner] = re.findall(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            errors[f"${variable['name']}"] = job_scope_errors(inner)
    assert {where: found for where, found in errors.items() if found} == {}


def test_dashboard_covers_gateway_kafka_and_business() -> None:
    """The dashboard has its gateway, Kafka, agent and business rows."""
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"}
    assert {"Gateway", "Kafka", "Agent and Send API", "Business"} <= titles


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
