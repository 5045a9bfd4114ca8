"""Reading the Grafana dashboard's PromQL outside Grafana: for tests and ``scripts/render-dashboard``.

Grafana fills in ``$__rate_interval``, ``$__range`` and the ``$account`` variable before it asks
Prometheus; :func:`instantiate` does the same with fixed values so any client can run the query.
:func:`metric_names` lists the series names an expression reads, to check them against what the
processes actually export.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PanelQuery", "instantiate", "load_queries", "metric_names"]

# Words that look like metric names in PromQL but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str
    legend: str
    unit: str


def load_queries(path: Path) -> list[PanelQuery]:
    """Every target of every panel (rows included, nested or not), in dashboard order."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queries: list[PanelQuery] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
            queries.extend(
                PanelQuery(panel["title"], target["refId"], target["expr"], target.get("legendFormat", ""), unit)
                for target in panel.get("targets", [])
            )
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return queries


def instantiate(expr: str, *, rate_interval: str = "1m", range_: str = "5m", account: str = ".*") -> str:
    """The expression as Grafana would send it, with fixed values for its variables."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__range", range_)
        .replace("$__interval", rate_interval)
        .replace("$account", account)
    )


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or label names)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word in _KEYWORDS:
            continue
        names.add(word)
    return names
