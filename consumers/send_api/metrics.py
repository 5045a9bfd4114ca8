"""Prometheus metrics of the Send API client. Labels come from small fixed sets only.

They belong to the process that uses the client (the agent): it builds :class:`SendApiMetrics`
in the registry its ``/metrics`` serves. Nothing registers on import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

__all__ = ["DURATION_BUCKETS", "SendApiMetrics"]

# One Graph API call: a few milliseconds to the local emulator, tens to hundreds to Meta, seconds
# when Meta is slow.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SendApiMetrics:
    """The Send API client's metrics, in ``registry``."""

    __slots__ = ("duration", "errors", "rate_limited_seconds", "requests", "retries")

    def __init__(self, registry: CollectorRegistry) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "igw_send_api_requests_total",
            "Send API HTTP calls by flavour and outcome (ok or error).",
            ["flavour", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "igw_send_api_errors_total",
            "Failed Send API calls by error class and Meta error code (known codes, else 'other').",
            ["error_class", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "igw_send_api_duration_seconds",
            "Duration of one Send API HTTP call.",
            ["flavour"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "igw_send_api_retries_total",
            "Send API calls repeated after a retriable failure, by the failure's error class.",
            ["error_class"],
            registry=registry,
        )
        self.rate_limited_seconds = Counter(
            "igw_send_api_rate_limited_seconds_total",
            "Time spent waiting for an account's send budget (local limits, Meta's usage header or errors).",
            ["flavour"],
            registry=registry,
        )
