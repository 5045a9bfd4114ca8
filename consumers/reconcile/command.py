"""``igw reconcile`` / ``igw reconcile --once``: recover what Meta never delivered, watch the subscription."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from typing import Any

from consumers.common.runner import run_main, stop_on_signals
from consumers.reconcile.settings import ReconcileSettings
from igw.logs import configure_logging

__all__ = ["EXIT_INCOMPLETE", "register", "run"]

EXIT_INCOMPLETE = 1

_DESCRIPTION = (
    "Compare each account's recent conversations (Meta's Conversations API) with the messages topic and "
    "publish the inbound messages Meta never delivered as webhooks, marked recovered; watch the accounts' "
    "webhook subscriptions. --once: one pass over every account; exit 0 when it completed, 1 with a one-line "
    "reason when it did not, 2 on a configuration error. Settings come from the environment (docs/reconcile.md)."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reconcile",
        help="recover messages Meta never delivered; watch the webhook subscription",
        description=_DESCRIPTION,
    )
    parser.add_argument("--once", action="store_true", help="one pass over every account, then exit")
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port for /metrics, /healthz, /readyz (default 9103)"
    )
    parser.add_argument("--log-level", default=os.environ.get("IGW_LOG_LEVEL", "info"), help="logging level")
    parser.add_argument(
        "--log-format", choices=("auto", "json", "text"), default=os.environ.get("IGW_LOG_FORMAT", "auto")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, args.log_format)
    settings = ReconcileSettings.from_env()
    if args.metrics_port is not None:
        settings = dataclasses.replace(settings, metrics_port=args.metrics_port)

    async def main() -> int:
        from consumers.reconcile.service import run_reconcile

        stop = asyncio.Event()
        undo = stop_on_signals(stop, asyncio.current_task())
        try:
            report = await run_reconcile(settings, stop, once=args.once)
        except Exception as exc:  # one line for the operator; the traceback at debug level
            logging.getLogger(__name__).debug("reconcile failed", exc_info=True)
            sys.stderr.write(f"igw reconcile: failed: {type(exc).__name__}: {exc}\n")
            return EXIT_INCOMPLETE
        finally:
            undo()
        if report is None:
            return 0
        sys.stdout.write(f"igw reconcile: {report.summary()}\n")
        if not report.complete:
            sys.stderr.write(f"igw reconcile: incomplete: {report.reason()}\n")
            return EXIT_INCOMPLETE
        return 0

    try:
        return run_main(main)
    except asyncio.CancelledError:
        logging.getLogger(__name__).warning("stopped during a pass; the next pass finds what this one did not")
        return EXIT_INCOMPLETE
