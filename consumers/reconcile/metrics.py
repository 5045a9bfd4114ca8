"""The reconcile process's Prometheus metrics, in the registry its ``/metrics`` serves (its own).

Labels come from small fixed sets: configured accounts, event types, endpoints, outcomes. Nothing
registers on import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from igw.metrics import process_registry

__all__ = ["ReconcileMetrics"]


class ReconcileMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = self.registry = registry if registry is not None else process_registry()
        self.subscription_active = Gauge(
            "igw_subscription_active",
            "1 while the account's subscribed_apps lists this app with the messages field; 0 once Meta removed it.",
            ["account"],
            registry=r,
        )
        self.app_subscription_active = Gauge(
            "igw_app_subscription_active",
            "1 while the app's webhook subscription for the object (instagram, page) is active with messages.",
            ["object"],
            registry=r,
        )
        self.recovered = Counter(
            "igw_reconcile_recovered_total",
            "Inbound events Meta never delivered as webhooks, published by reconcile, by account and type.",
            ["account", "type"],
            registry=r,
        )
        self.checked = Counter(
            "igw_reconcile_checked_total",
            "Inbound messages compared with Kafka (each once): delivered ones plus recovered ones.",
            ["account"],
            registry=r,
        )
        self.hydrated = Counter(
            "igw_reconcile_hydrations_total",
            "message_edit events without sender or text looked up by mid, by outcome.",
            ["account", "outcome"],
            registry=r,
        )
        self.graph_calls = Counter(
            "igw_reconcile_graph_calls_total",
            "Graph API reads by account, endpoint and outcome (ok or the error class).",
            ["account", "endpoint", "outcome"],
            registry=r,
        )
        self.rate_limited_seconds = Counter(
            "igw_reconcile_rate_limited_seconds_total",
            "Time spent waiting for an account's read budget (local limit, Meta's usage header or errors).",
            ["account"],
            registry=r,
        )
        self.account_paused = Gauge(
            "igw_reconcile_account_paused",
            "1 while the account is paused after Meta refused its token or the account.",
            ["account"],
            registry=r,
        )
        self.passes = Counter(
            "igw_reconcile_passes_total",
            "Passes over one account, by outcome (complete, throttled, paused, failed).",
            ["account", "outcome"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "igw_reconcile_pass_duration_seconds",
            "Duration of one pass over every account.",
            # A few reads take about a second (2 reads/s per account); thousands of conversations, minutes.
            buckets=(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
            registry=r,
        )
        self.last_pass = Gauge(
            "igw_reconcile_last_complete_pass_timestamp_seconds",
            "When the last pass that completed for every account ended (Unix time).",
            registry=r,
        )
        self.delivered_index = Gauge(
            "igw_reconcile_delivered_ids",
            "Event ids read back from the messages topic and held to tell delivered from missing.",
            registry=r,
        )
