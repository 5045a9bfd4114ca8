"""Reading the Grafana dashboard's PromQL outside Grafana: for tests and ``scripts/render-dashboard``.

Grafana fills in ``$__rate_interval``, ``$__range`` and the ``$account`` variable before it asks
Prometheus; :func:`instantiate` does the same with fixed values so any client can run the query.
:func:`metric_names` lists the series names an expression reads, to check them against what the
processes actually export; :func:`selectors` gives each one's label matchers, to check that it
reads the job that exports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PanelQuery", "Selector", "instantiate", "load_queries", "metric_names", "selectors"]

# Words that look like metric names in PromQL but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})?")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Selector:
    """One series selector of an expression: ``name{label op "value", ...}``."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def values(self, label: str) -> set[str] | None:
        """The values a ``label="v"`` or ``label=~"a|b"`` matcher allows; None without one."""
        for name, op, value in self.matchers:
            if name == label and op in ("=", "=~"):
                return {value} if op == "=" else set(value.split("|"))
        return None


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


def selectors(expr: str) -> list[Selector]:
    """Every series selector of an expression, in order, with its label matchers."""
    text = _RANGE.sub("", expr)
    text = _LABEL_LIST.sub("", text)
    found = []
    for match in _SELECTOR.finditer(text):
        name, braces = match.group(1), match.group(2) or ""
        if text[match.end() :].lstrip().startswith("(") or name in _KEYWORDS:
            continue
        found.append(Selector(name, tuple(_MATCHER.findall(braces))))
    return found
