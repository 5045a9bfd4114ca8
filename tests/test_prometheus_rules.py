"""deploy/prometheus passes promtool: config, rules, and a unit test that fires every alert."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.plugins.prometheus import DEPLOY

PROM = DEPLOY / "prometheus"


def run(promtool: str, *args: str | Path) -> str:
    result = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=PROM
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alerts() -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.update({rule["alert"]: rule for rule in group["rules"] if "alert" in rule})
    return found


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
