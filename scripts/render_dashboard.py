"""Plot the key dashboard panels from a snapshot saved by tests/test_dashboard_live.py.

Usage: python scripts/render_dashboard.py SNAPSHOT.json OUTPUT.png (scripts/render-dashboard runs it).
The series are the Prometheus query_range answers for the dashboard's own PromQL.
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

KEY_PANELS = [
    "Webhook requests/s by status",
    "Events published/s by type",
    "Publish latency (per request)",
    "Consumer lag by group and topic",
    "Inbound messages/s by type",
    "Top clicks by payload",
    "Conversations started",
    "Unique users today (approx.)",
    "Agent replies/s by outcome",
    "Replies by outcome",
    "First response time",
    "Human takeover share",
]
BAR_PANELS = {"Top clicks by payload", "Conversations started", "Unique users today (approx.)"}


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


def main(snapshot_path: str, output: str) -> int:
    snapshot = json.loads(Path(snapshot_path).read_text())
    start = float(snapshot["start"])
    panels: dict[str, list[dict[str, Any]]] = snapshot["panels"]
    chosen = [name for name in KEY_PANELS if name in panels]
    cols = 4
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, chosen, strict=False):
        targets = panels[name]
        unit = targets[0]["unit"]
        if name in BAR_PANELS:
            labels, values = [], []
            for target in targets:
                for series in target["series"]:
                    _, ys = points(series, start)
                    if ys:
                        labels.append(legend(target["legend"], series["metric"]))
                        values.append(ys[-1])
            ax.barh(labels, values, color="#3274d9")
            ax.invert_yaxis()
        else:
            for target in targets:
                for series in target["series"]:
                    xs, ys = points(series, start)
                    if xs:
                        ax.plot(xs, ys, label=legend(target["legend"], series["metric"]), linewidth=1.4)
            ax.set_xlabel("seconds into the run")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
        ax.set_title(f"{name} ({unit})", fontsize=10)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    fig.suptitle("igw dashboard, key panels: live run (gateway + agent + analytics, Prometheus 1 s scrape)")
    fig.tight_layout()
    fig.savefig(output, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
