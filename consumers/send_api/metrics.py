"""Prometheus metrics of the Send API client. Labels come from small fixed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["DURATION", "ERRORS", "RATE_LIMITED_SECONDS", "REQUESTS", "RETRIES"]

REQUESTS = Counter(
    "igw_send_api_requests_total",
    "Send API HTTP calls by flavour and outcome (ok or error).",
    ["flavour", "outcome"],
)
ERRORS = Counter(
    "igw_send_api_errors_total",
    "Failed Send API calls by error class and Meta error code (known codes, else 'other').",
    ["error_class", "code"],
)
DURATION = Histogram(
    "igw_send_api_duration_seconds",
    "Duration of one Send API HTTP call.",
    ["flavour"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES = Counter(
    "igw_send_api_retries_total",
    "Send API calls repeated after a retriable failure, by the failure's error class.",
    ["error_class"],
)
RATE_LIMITED_SECONDS = Counter(
    "igw_send_api_rate_limited_seconds_total",
    "Time spent waiting for an account's send budget (local limits, Meta's usage header or errors).",
    ["flavour"],
)
