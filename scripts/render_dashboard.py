"""Draw every panel of the Grafana dashboard, laid out on its grid, from a live run's snapshot.

Usage: python scripts/render_dashboard.py SNAPSHOT.json OUTPUT.png [DASHBOARD.json]
(scripts/render-dashboard runs it). The snapshot holds the Prometheus ``query_range`` answers for
the dashboard's own PromQL (saved by tests/test_dashboard_live.py). Each panel is drawn where its
``gridPos`` puts it, under its row: time series as lines, stat panels as their last value, bar
gauges as bars. This is matplotlib, not Grafana: the data and layout are the dashboard's, the
look is not, and the picture says so.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt  # after mpl.use: the backend must be chosen first
from matplotlib.axes import Axes

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "igw.json"
GRID_COLUMNS = 24
INCHES_PER_COLUMN = 0.8
INCHES_PER_ROW = 0.42
COLORS = ["#3274d9", "#56a64b", "#e0b400", "#e02f44", "#a352cc", "#ff780a", "#8ab8ff", "#73bf69"]


def legend(template: str, metric: dict[str, str]) -> str:
    text = template
    for key, value in metric.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ",".join(f"{k}={v}" for k, v in metric.items()) or "value"


def points(series: dict[str, Any], start: float) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for ts, raw in series["values"]:
        value = float(raw)
        if math.isfinite(value):
            xs.append(float(ts) - start)
            ys.append(value)
    return xs, ys


def formatted(value: float, unit: str) -> str:
    """A value as the panel's unit shows it (the few units the dashboard uses)."""
    if unit == "percentunit":
        return f"{value * 100:.1f} %"
    if unit == "bool":
        return "yes" if value >= 1 else "no"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "h":
        return f"{value:.2f} h"
    return f"{value:.3g}"


def last_values(targets: list[dict[str, Any]], start: float) -> list[tuple[str, float]]:
    found = []
    for target in targets:
        for series in target["series"]:
            _, ys = points(series, start)
            if ys:
                found.append((legend(target["legend"], series["metric"]), ys[-1]))
    return found


def draw_timeseries(ax: Axes, targets: list[dict[str, Any]], start: float) -> None:
    n = 0
    for target in targets:
        for series in target["series"]:
            xs, ys = points(series, start)
            if xs:
                label = legend(target["legend"], series["metric"])
                ax.plot(xs, ys, label=label, linewidth=1.3, color=COLORS[n % len(COLORS)])
                n += 1
    ax.set_xlabel("seconds into the run", fontsize=7)
    ax.grid(alpha=0.3)
    if n:
        ax.legend(fontsize=6, loc="upper left", ncol=2 if n > 4 else 1, framealpha=0.6)


def draw_stat(ax: Axes, targets: list[dict[str, Any]], start: float, unit: str) -> None:
    values = last_values(targets, start)
    ax.axis("off")
    for i, (label, value) in enumerate(values[:4]):
        y = 0.62 - i * 0.5 / max(1, len(values[:4]))
        ax.text(0.5, y, formatted(value, unit), ha="center", va="center", fontsize=22 if len(values) == 1 else 14)
        if len(values) > 1 or label not in ("value", ""):
            ax.text(0.5, y - 0.13, label, ha="center", va="center", fontsize=7, color="#555555")


def draw_bars(ax: Axes, targets: list[dict[str, Any]], start: float) -> None:
    values = last_values(targets, start)
    labels = [label for label, _ in values]
    ax.barh(labels, [value for _, value in values], color=COLORS[0])
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")


def main(snapshot_path: str, output: str, dashboard_path: str | None = None) -> int:
    snapshot = json.loads(Path(snapshot_path).read_text())
    dashboard = json.loads(Path(dashboard_path or DASHBOARD).read_text())
    start = float(snapshot["start"])
    taken: dict[str, list[dict[str, Any]]] = snapshot["panels"]
    panels = dashboard["panels"]
    grid_rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + 2  # + a title band
    width, height = GRID_COLUMNS * INCHES_PER_COLUMN, grid_rows * INCHES_PER_ROW
    fig = plt.figure(figsize=(width, height))

    def box(pos: dict[str, int], pad_left: float = 0.35, pad_top: float = 0.9, pad_bottom: float = 0.7) -> list[float]:
        """Figure coordinates of a gridPos, leaving room for the title and tick labels."""
        x, y, w, h = pos["x"], pos["y"] + 2, pos["w"], pos["h"]
        return [
            (x + pad_left) / GRID_COLUMNS,
            1 - (y + h - pad_bottom) / grid_rows,
            (w - pad_left - 0.35) / GRID_COLUMNS,
            (h - pad_top - pad_bottom) / grid_rows,
        ]

    drawn = 0
    for panel in panels:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            fig.text(0.005, 1 - (pos["y"] + 2 + 0.6) / grid_rows, panel["title"], fontsize=14, weight="bold")
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        targets = taken.get(panel["title"], [])
        # Bar labels (payloads, kinds) sit left of the bars: give them room.
        ax = fig.add_axes(box(pos, pad_left=2.2 if panel["type"] == "bargauge" else 0.35))
        # The title at the panel's left edge, as Grafana puts it, whatever room the plot takes.
        fig.text(
            (pos["x"] + 0.35) / GRID_COLUMNS,
            1 - (pos["y"] + 2 + 0.7) / grid_rows,
            f"{panel['title']} ({unit})",
            fontsize=9,
        )
        ax.tick_params(labelsize=6)
        if panel["type"] == "stat":
            draw_stat(ax, targets, start, unit)
        elif panel["type"] == "bargauge":
            draw_bars(ax, targets, start)
        else:
            draw_timeseries(ax, targets, start)
        drawn += 1
    fig.text(
        0.005,
        1 - 0.9 / grid_rows,
        f"{dashboard['title']}: all {drawn} panels, drawn with matplotlib by scripts/render-dashboard from a live "
        "run of the local stack (Prometheus, 1 s scrape). Not a Grafana screenshot.",
        fontsize=12,
    )
    fig.savefig(output, dpi=60)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
