"""Which Prometheus job exports which series: each process's metrics, built as the process builds them.

The job names are those of deploy/prometheus/prometheus.yml. The dashboard and rule tests use
:func:`job_scope_errors` to check that every selector reads the job that exports its metric.
"""

from __future__ import annotations

from functools import cache

from prometheus_client import CollectorRegistry, Metric

from consumers.agent_replies.metrics import AgentMetrics
from consumers.analytics.dashboard import selectors
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.common.metrics import ConsumerMetrics
from consumers.send_api.metrics import SendApiMetrics
from gateway.metrics import GatewayMetrics

JOBS = ("igw-gateway", "igw-agent", "igw-analytics")


def sample_names(families: list[Metric]) -> set[str]:
    """The series names a family shows on /metrics, even before any label child exists."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
    names: set[str] = set()
    for family in families:
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


@cache
def exported_by_job() -> dict[str, frozenset[str]]:
    """The igw series names each process's /metrics shows, by the job Prometheus scrapes it as."""
    agent, analytics = CollectorRegistry(), CollectorRegistry()
    AgentMetrics(agent)
    SendApiMetrics(agent)
    ConsumerMetrics(agent, "igw-agent")
    AnalyticsMetrics(analytics)
    ConsumerMetrics(analytics, "igw-analytics")
    registries = {"igw-gateway": GatewayMetrics().registry, "igw-agent": agent, "igw-analytics": analytics}
    return {
        job: frozenset(name for name in sample_names(list(registry.collect())) if name.startswith("igw_"))
        for job, registry in registries.items()
    }


def jobs_exporting(name: str) -> set[str]:
    """The jobs whose /metrics carry series ``name`` (every job has ``up``)."""
    if name == "up":
        return set(JOBS)
    return {job for job, names in exported_by_job().items() if name in names}


def job_scope_errors(expr: str) -> list[str]:
    """What is wrong with ``expr``'s job scoping: each selector of an igw metric (or ``up``) must
    match ``job`` by name, and only jobs that export the metric. Recording-rule series are skipped."""
    errors = []
    for selector in selectors(expr):
        if ":" in selector.name:
            continue  # a recording rule's output: its own expression is checked
        owners = jobs_exporting(selector.name)
        if not owners:
            errors.append(f"{selector.name}: no igw process exports it")
            continue
        jobs = selector.values("job")
        if jobs is None:
            errors.append(f"{selector.name}: no job matcher (exported by {sorted(owners)})")
        elif not jobs <= owners:
            errors.append(f"{selector.name}{{job in {sorted(jobs)}}}: only {sorted(owners)} export it")
    return errors
