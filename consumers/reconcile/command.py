"""``igw reconcile`` / ``igw reconcile --once``: recover what Meta never delivered, watch the subscription."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from aiokafka.errors import KafkaConnectionError

from consumers.common.runner import run_consumer
from consumers.reconcile.settings import ReconcileSettings
from igw.config import LOG_FORMATS, LOG_LEVELS, Env, LogSettings
from igw.errors import StartupError
from igw.logs import configure_logging
from igw.preflight import METRICS_LISTEN, check_kafka, check_listen, kafka_unreachable

__all__ = ["EXIT_INCOMPLETE", "register", "run"]

EXIT_INCOMPLETE = 1

_DESCRIPTION = (
    "Compare each account's recent conversations (Meta's Conversations API) with the messages topic and "
    "publish the inbound messages Meta never delivered as webhooks, marked recovered; watch the accounts' "
    "webhook subscriptions. --once: one pass over every account; exit 0 when it completed, 1 with a one-line "
    "reason when it did not, 2 when it cannot start (a setting, the port, no Kafka). Settings come from the "
    "environment (docs/reconcile.md); each flag wins over its variable."
)


def register(subparsers: Any) -> None:
    # No defaults from the environment here: they are read when the command runs (LogSettings).
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reconcile",
        help="recover messages Meta never delivered; watch the webhook subscription",
        description=_DESCRIPTION,
    )
    parser.add_argument("--once", action="store_true", help="one pass over every account, then exit")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port for /metrics, /healthz, /readyz (IGW_METRICS_PORT, 9103)"
    )
    parser.add_argument(
        "--metrics-host", default=None, help="address for the metrics server (IGW_METRICS_HOST, 0.0.0.0)"
    )
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="IGW_LOG_LEVEL, default info")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="IGW_LOG_FORMAT, default auto")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Settings, the metrics port (the running process serves one), then Kafka, and only then
    # logging: a start that cannot succeed ends with one line (igw_tools.cli).
    logs = LogSettings.from_env(Env(), level=args.log_level, fmt=args.log_format)
    settings = ReconcileSettings.from_env(metrics_host=args.metrics_host, metrics_port=args.metrics_port)
    if not args.once:
        check_listen(settings.metrics_host, settings.metrics_port, settings=METRICS_LISTEN)

    async def main(stop: asyncio.Event, started: asyncio.Event) -> int:
        from consumers.reconcile.service import run_reconcile

        await check_kafka(settings.kafka)
        configure_logging(logs.level, logs.format)
        # ``started`` stays unset: reconcile holds nothing a stop could lose (a pass publishes by event
        # id and the next pass finds what this one did not), so a signal at any moment ends it at once.
        try:
            report = await run_reconcile(settings, stop, once=args.once)
        except asyncio.CancelledError:
            if not args.once:
                raise
            logging.getLogger(__name__).warning("stopped during a pass; the next pass finds what this one did not")
            return EXIT_INCOMPLETE
        except KafkaConnectionError:
            # Kafka went away between the check and the start; aiokafka raises this only while connecting.
            raise kafka_unreachable(settings.kafka) from None
        except StartupError:
            raise
        except Exception as exc:  # one line for the operator; the traceback at debug level
            logging.getLogger(__name__).debug("reconcile failed", exc_info=True)
            sys.stderr.write(f"igw reconcile: failed: {type(exc).__name__}: {exc}\n")
            return EXIT_INCOMPLETE
        if report is None:
            return 0
        sys.stdout.write(f"igw reconcile: {report.summary()}\n")
        if not report.complete:
            sys.stderr.write(f"igw reconcile: incomplete: {report.reason()}\n")
            return EXIT_INCOMPLETE
        return 0

    return run_consumer(main)
