"""deploy/prometheus passes promtool: config, rules, a unit test that fires every alert, and one that
shows a healthy stack (and metrics under the wrong job) firing none; every rule reads its own job."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.plugins.exports import JOBS, job_scope_errors
from tests.plugins.prometheus import DEPLOY

PROM = DEPLOY / "prometheus"


def run(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=PROM
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule of every rule file."""
    return [
        rule
        for path in sorted((PROM / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_config_is_valid(promtool: str) -> None:
    """``promtool check config`` accepts prometheus.yml with the rule files it names."""
    out = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in out


def test_rules_are_valid(promtool: str) -> None:
    """``promtool check rules`` accepts every rule file."""
    run(promtool, "check", "rules", *sorted((PROM / "rules").glob("*.yml")))


def test_rule_unit_tests_pass(promtool: str) -> None:
    """``promtool test rules`` passes for every test file under deploy/prometheus/tests."""
    files = sorted((PROM / "tests").glob("*.yml"))
    assert files
    out = run(promtool, "test", "rules", *files)
    assert "SUCCESS" in out


def test_every_alert_has_a_runbook_and_a_firing_test() -> None:
    """Each alert carries a runbook line and appears in a unit test case that expects it to fire."""
    rules = alerts()
    assert len(rules) >= 10
    fired: set[str] = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    for name, rule in rules.items():
        annotations = rule.get("annotations")
        assert isinstance(annotations, dict)
        assert len(str(annotations.get("runbook", ""))) > 30, f"{name} has no runbook line"
    assert set(rules) <= fired, f"alerts without a firing test: {sorted(set(rules) - fired)}"


def test_every_rule_reads_the_job_that_exports_its_metrics() -> None:
    """Each selector of each rule matches ``job`` to the processes that export the metric (none of the others')."""
    errors = {rule.get("alert") or rule["record"]: job_scope_errors(rule["expr"]) for rule in rules()}
    assert {name: found for name, found in errors.items() if found} == {}


def test_job_scope_check_sees_a_missing_or_wrong_job() -> None:
    """The scope check is not vacuous: no job, a job that does not export the metric, and a wildcard are caught."""
    assert job_scope_errors("igw_producer_ready == 0")
    assert job_scope_errors('igw_producer_ready{job="igw-agent"} == 0')
    assert job_scope_errors('up{job=~"igw-.*"} == 0')
    assert job_scope_errors('igw_consumer_lag_messages{job=~"igw-agent|igw-gateway"}')
    assert not job_scope_errors('igw_consumer_lag_messages{job=~"igw-agent|igw-analytics"} > igw:x:max')


def test_healthy_stack_cases_check_every_alert() -> None:
    """healthy_test.yml feeds series of all three jobs and expects no alert, naming every alert at every eval time."""
    doc = yaml.safe_load((PROM / "tests" / "healthy_test.yml").read_text())
    names = set(alerts())
    for case in doc["tests"]:
        by_time: dict[str, set[str]] = {}
        for check in case["alert_rule_test"]:
            assert check["exp_alerts"] == [], (case["name"], check)
            by_time.setdefault(check["eval_time"], set()).add(check["alertname"])
        assert len(by_time) >= 2, case["name"]
        for eval_time, checked in by_time.items():
            assert checked == names, f"{case['name']} at {eval_time}: missing {sorted(names - checked)}"
        jobs = {m for s in case["input_series"] for m in re.findall(r'job="([^"]+)"', s["series"])}
        assert set(JOBS) <= jobs, case["name"]


def test_scrape_configs_and_pods_carry_the_job_names_the_rules_read() -> None:
    """Both scrape configs name exactly the three jobs; each Kubernetes pod announces the port of its job."""
    ports: dict[str, set[str]] = {}
    for config in (PROM / "prometheus.yml", DEPLOY / "compose" / "prometheus.yml"):
        jobs = yaml.safe_load(config.read_text())["scrape_configs"]
        assert sorted(job["job_name"] for job in jobs) == sorted(JOBS), config
        for job in jobs:
            [target] = job["static_configs"][0]["targets"]
            ports.setdefault(job["job_name"], set()).add(target.rsplit(":", 1)[1])
    pods: dict[str, dict[str, str]] = {}
    for manifest in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc and doc.get("kind") == "Deployment":
                pod = doc["spec"]["template"]["metadata"]
                pods[pod["labels"]["app.kubernetes.io/name"]] = pod.get("annotations", {})
    assert sorted(pods) == sorted(JOBS)
    for job, announced in pods.items():
        assert announced.get("prometheus.io/scrape") == "true", job
        assert {announced.get("prometheus.io/port")} == ports[job], job
