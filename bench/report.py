"""Results: one record per run, medians per scenario and server, the markdown table and the summary line."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.loadgen import LoadResult

SERVERS = ("ceiling", "floor", "gateway", "baseline")
# The consumer runs the summary line reports (variant keys of bench/consumer_runs.py).
AGENT_MANY = "memory-many"
AGENT_ONE = "memory-one"
ANALYTICS_MIX = "mix"
LABELS = {
    "ceiling": "(a) aiohttp bare",
    "gateway": "(b) igw gateway",
    "baseline": "(c) FastAPI + aiokafka",
    "floor": "(d) aiohttp + publish",
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events the server acknowledged (2xx) against the records found in Kafka afterwards."""

    acknowledged: int
    found: int
    # Requests in flight when the load stopped, and requests answered non-2xx (Meta would retry
    # them), may have been published without being counted as acknowledged.
    in_flight_bound: int

    @property
    def missing(self) -> int:
        return max(0, self.acknowledged - self.found)

    @property
    def extra(self) -> int:
        return max(0, self.found - self.acknowledged)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra <= self.in_flight_bound

    def describe(self) -> str:
        if self.missing:
            return f"MISSING {self.missing} of {self.acknowledged} acknowledged events ({self.found} found)"
        verdict = "ok" if self.ok else f"UNEXPECTED: more extras than the {self.in_flight_bound} in flight"
        return (
            f"{verdict}: {self.acknowledged} acknowledged, {self.found} found in Kafka "
            f"({self.extra} extra: requests in flight when the load stopped or answered non-2xx)"
        )


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    server: str
    round: int
    load: LoadResult
    events_per_request: int
    cpu_seconds: float
    peak_rss_bytes: int
    delivery: Delivery | None
    broker_cpu_seconds: float | None = None  # the broker's CPU over the measured run (publishing servers)

    @property
    def events(self) -> int:
        return self.load.ok * self.events_per_request

    @property
    def server_core_busy(self) -> float:
        """Share of its core the server used: well under 1 means something else (load, broker) limited it."""
        return self.cpu_seconds / self.load.duration_s if self.load.duration_s else 0.0

    @property
    def broker_cpu_per_1k_events(self) -> float | None:
        if self.broker_cpu_seconds is None or not self.events:
            return None
        return self.broker_cpu_seconds / self.events * 1000

    @property
    def events_per_s(self) -> float:
        return self.load.rps * self.events_per_request

    @property
    def cpu_per_1k_events(self) -> float:
        return self.cpu_seconds / self.events * 1000 if self.events else float("nan")


@dataclass(frozen=True, slots=True)
class Answered:
    """What a consumer run was to do (per key: replies per user, or one count) against what it did."""

    expected: dict[str, int]
    found: dict[str, int]
    what: str = "replies"

    @property
    def missing(self) -> int:
        return sum(max(0, n - self.found.get(key, 0)) for key, n in self.expected.items())

    @property
    def extra(self) -> int:
        """Duplicates, and anything done for a key that expected nothing."""
        return sum(max(0, n - self.expected.get(key, 0)) for key, n in self.found.items())

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0

    def describe(self) -> str:
        expected, found = sum(self.expected.values()), sum(self.found.values())
        if self.ok:
            return f"ok: {found} {self.what}, each exactly once"
        return f"FAILED: {expected} {self.what} expected, {found} found, {self.missing} missing, {self.extra} extra"


@dataclass(frozen=True, slots=True)
class ConsumerRun:
    """One measured run of a consumer (agent or analytics) over records loaded before it started."""

    scenario: str
    variant: str  # a key: "memory-many", "memory-one", "redis-many", "redis-one", "mix"
    label: str  # what the table shows, e.g. "in-process store, 1000 conversations"
    round: int
    items: int  # replies sent or events counted over the whole run
    seconds: float  # from the first item to the last
    rate: float  # items per second over ``seconds``
    cpu_seconds: float  # the consumer's utime + stime over ``cpu_span`` seconds ...
    cpu_items: int  # ... in which it did this many items
    cpu_span: float
    peak_rss_bytes: int
    check: Answered
    helper_cpu_seconds: float | None = None  # the Graph emulator's, over the same span
    broker_cpu_seconds: float | None = None

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_seconds / self.cpu_items * 1000 if self.cpu_items else float("nan")

    @property
    def core_busy(self) -> float:
        """The consumer's CPU as a share of one core while it worked."""
        return self.cpu_seconds / self.cpu_span if self.cpu_span > 0 else float("nan")

    def per_1k(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.cpu_items else seconds / self.cpu_items * 1000


@dataclass(frozen=True, slots=True)
class ConsumerSummary:
    scenario: str
    variant: str
    label: str
    rounds: int
    items: int
    rate: float
    cpu_per_1k: float
    core_busy: float
    helper_cpu_per_1k: float | None
    broker_cpu_per_1k: float | None
    peak_rss_mib: float
    failed_checks: int


def summarize_consumers(runs: list[ConsumerRun]) -> list[ConsumerSummary]:
    """Medians over rounds per (scenario, variant); peak RSS is the worst round's."""
    out = []
    for scenario, variant in dict.fromkeys((r.scenario, r.variant) for r in runs):
        same = [r for r in runs if r.scenario == scenario and r.variant == variant]
        out.append(
            ConsumerSummary(
                scenario=scenario,
                variant=variant,
                label=same[0].label,
                rounds=len(same),
                items=same[0].items,
                rate=_median_known([r.rate for r in same]),
                cpu_per_1k=_median_known([r.cpu_per_1k for r in same]),
                core_busy=_median_known([r.core_busy for r in same]),
                helper_cpu_per_1k=_median_or_none([r.per_1k(r.helper_cpu_seconds) for r in same]),
                broker_cpu_per_1k=_median_or_none([r.per_1k(r.broker_cpu_seconds) for r in same]),
                peak_rss_mib=max(r.peak_rss_bytes for r in same) / 2**20,
                failed_checks=sum(not r.check.ok for r in same),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    server: str
    rounds: int
    rps: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_per_1k_events: float
    server_core_busy: float
    broker_cpu_per_1k_events: float | None
    peak_rss_mib: float
    errors: int  # non-2xx answers and socket errors over all rounds


def summarize(results: list[RunResult]) -> list[Summary]:
    """Medians over rounds per (scenario, server); max latency and peak RSS are the worst round's."""
    out = []
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    for scenario in scenarios:
        for server in SERVERS:
            runs = [r for r in results if r.scenario == scenario and r.server == server]
            if not runs:
                continue
            out.append(
                Summary(
                    scenario=scenario,
                    server=server,
                    rounds=len(runs),
                    rps=statistics.median(r.load.rps for r in runs),
                    events_per_s=statistics.median(r.events_per_s for r in runs),
                    p50_ms=statistics.median(r.load.p50_ms for r in runs),
                    p99_ms=statistics.median(r.load.p99_ms for r in runs),
                    max_ms=max(r.load.max_ms for r in runs),
                    cpu_per_1k_events=statistics.median(r.cpu_per_1k_events for r in runs),
                    server_core_busy=statistics.median(r.server_core_busy for r in runs),
                    broker_cpu_per_1k_events=_median_or_none([r.broker_cpu_per_1k_events for r in runs]),
                    peak_rss_mib=max(r.peak_rss_bytes for r in runs) / 2**20,
                    errors=sum(r.load.non2xx + r.load.socket_errors for r in runs),
                )
            )
    return out


def _median_known(values: list[float]) -> float:
    """The median of the values that are not NaN (runs too quick to time), else NaN."""
    known = [v for v in values if v == v]
    return statistics.median(known) if known else float("nan")


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _find(summaries: list[Summary], scenario: str, server: str) -> Summary | None:
    return next((s for s in summaries if s.scenario == scenario and s.server == server), None)


def ratio(summaries: list[Summary], scenario: str, other: str) -> float | None:
    gateway, base = _find(summaries, scenario, "gateway"), _find(summaries, scenario, other)
    if gateway is None or base is None or base.rps == 0:
        return None
    return gateway.rps / base.rps


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk (unknown version)"
    return (out.stdout or out.stderr).split("Copyright")[0].strip() or "wrk"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return "–" if value != value else f"{value:.0%}"


def _sig(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3g}"


def _preamble(setup: str) -> list[str]:
    """When and where a table was measured, and how."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [f"Measured {now} on {machine()}.", setup, ""]


def markdown(summaries: list[Summary], *, setup: str) -> str:
    lines = [
        *_preamble(setup),
        "| scenario | server | req/s | events/s | p50 ms | p99 ms | max ms | CPU s / 1k events | server CPU % "
        "| broker CPU s / 1k events | peak RSS MiB | b/a | b/c | b/d |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        ratio_a = ratio(summaries, s.scenario, "ceiling") if s.server == "gateway" else None
        ratio_c = ratio(summaries, s.scenario, "baseline") if s.server == "gateway" else None
        ratio_d = ratio(summaries, s.scenario, "floor") if s.server == "gateway" else None
        lines.append(
            f"| {s.scenario} | {LABELS[s.server]} | {_fmt(s.rps, 0)} | {_fmt(s.events_per_s, 0)} | {_fmt(s.p50_ms)} "
            f"| {_fmt(s.p99_ms)} | {_fmt(s.max_ms)} | {_sig(s.cpu_per_1k_events)} | {s.server_core_busy:.0%} "
            f"| {_sig(s.broker_cpu_per_1k_events)} | {_fmt(s.peak_rss_mib, 0)} "
            f"| {_fmt(ratio_a)} | {_fmt(ratio_c)} | {_fmt(ratio_d)} |"
        )
    errors = [s for s in summaries if s.errors]
    if errors:
        lines.append("")
        lines.extend(f"Errors: {s.scenario} {LABELS[s.server]}: {s.errors} non-2xx or socket errors" for s in errors)
    return "\n".join(lines)


def consumer_markdown(summaries: list[ConsumerSummary], *, setup: str) -> str:
    lines = [
        *_preamble(setup),
        "| scenario | variant | items | per second | CPU s / 1k | consumer CPU % | emulator CPU s / 1k "
        "| broker CPU s / 1k | peak RSS MiB | check |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in summaries:
        check = "ok" if not s.failed_checks else f"FAILED in {s.failed_checks} of {s.rounds}"
        lines.append(
            f"| {s.scenario} | {s.label} | {s.items:,} | {_fmt(s.rate, 0)} | {_sig(s.cpu_per_1k)} "
            f"| {_pct(s.core_busy)} | {_sig(s.helper_cpu_per_1k)} | {_sig(s.broker_cpu_per_1k)} "
            f"| {_fmt(s.peak_rss_mib, 0)} | {check} |"
        )
    return "\n".join(lines)


def _consumer_rate(consumers: Sequence[ConsumerSummary], scenario: str, variant: str) -> str:
    found = next((c for c in consumers if c.scenario == scenario and c.variant == variant), None)
    return "na" if found is None or found.rate != found.rate else f"{found.rate:.0f}"


def summary_line(summaries: list[Summary], consumers: Sequence[ConsumerSummary] = ()) -> str:
    """The machine-readable last line. Figures come from ``one`` (else the first scenario run)."""
    primary = "one" if any(s.scenario == "one" for s in summaries) else (summaries[0].scenario if summaries else "")

    def rps(server: str) -> str:
        s = _find(summaries, primary, server)
        return "na" if s is None else f"{s.rps:.0f}"

    gateway = _find(summaries, primary, "gateway")
    batch = _find(summaries, "batch", "gateway")
    ratio_a, ratio_c = ratio(summaries, primary, "ceiling"), ratio(summaries, primary, "baseline")
    ratio_d = ratio(summaries, primary, "floor")
    return (
        f"gateway_rps={rps('gateway')} ceiling_rps={rps('ceiling')} baseline_rps={rps('baseline')} "
        f"ratio_ceiling={'na' if ratio_a is None else f'{ratio_a:.2f}'} "
        f"ratio_baseline={'na' if ratio_c is None else f'{ratio_c:.2f}'} "
        f"p99_ms={'na' if gateway is None else f'{gateway.p99_ms:.2f}'} "
        f"batch_events_per_s={'na' if batch is None else f'{batch.events_per_s:.0f}'} "
        f"agent_replies_per_s={_consumer_rate(consumers, 'agent', AGENT_MANY)} "
        f"agent_replies_per_s_1conv={_consumer_rate(consumers, 'agent', AGENT_ONE)} "
        f"analytics_events_per_s={_consumer_rate(consumers, 'analytics', ANALYTICS_MIX)} "
        f"floor_rps={rps('floor')} ratio_floor={'na' if ratio_d is None else f'{ratio_d:.2f}'}"
    )
