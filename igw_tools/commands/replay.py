"""``igw replay``: re-publish records of one topic to another, or re-drive dead letters through a gateway."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka.errors import KafkaConnectionError

from igw.config import Env, KafkaSettings
from igw.preflight import KAFKA_CHECK_SECONDS, check_kafka, kafka_unreachable
from igw.topics import TOPIC_NAMES
from igw_tools.replay import RecordFilter, ReplayPlan, ReplayReport, parse_offsets, parse_time_ms, replay


def topic_name(kafka: KafkaSettings, name: str) -> str:
    """igw's short topic names (``deadletter``, ``messages``, ...) get the prefix; others are used as given."""
    return kafka.topic(name) if name in TOPIC_NAMES else name


def _csv(values: list[str] | None) -> frozenset[str]:
    return frozenset(v.strip() for item in values or () for v in item.split(",") if v.strip())


def plan_from_args(args: argparse.Namespace, kafka: KafkaSettings) -> ReplayPlan:
    return ReplayPlan(
        source=topic_name(kafka, args.source),
        target=topic_name(kafka, args.to) if args.to else None,
        target_url=args.to_url,
        since_ms=parse_time_ms(args.since) if args.since else None,
        until_ms=parse_time_ms(args.until) if args.until else None,
        from_offsets=parse_offsets(args.from_offset) if args.from_offset else None,
        to_offsets=parse_offsets(args.to_offset) if args.to_offset else None,
        record_filter=RecordFilter(accounts=_csv(args.account), types=_csv(args.type)),
        dry_run=args.dry_run,
        timeout=args.timeout,
    )


def run(args: argparse.Namespace) -> int:
    kafka = KafkaSettings.from_env(Env())
    try:
        plan = plan_from_args(args, kafka)
    except ValueError as exc:
        sys.stderr.write(f"igw replay: {exc}\n")
        return 2
    if plan.source == plan.target and not plan.dry_run:
        sys.stderr.write(f"igw replay: {plan.source} is both source and target; name another --to\n")
        return 2

    async def main() -> ReplayReport:
        await check_kafka(kafka, timeout=min(plan.timeout, KAFKA_CHECK_SECONDS))
        return await replay(kafka, plan)

    try:
        report = asyncio.run(main())
    except KafkaConnectionError:
        raise kafka_unreachable(kafka) from None
    except ValueError as exc:
        sys.stderr.write(f"igw replay: {exc}\n")
        return 1
    except TimeoutError:
        sys.stderr.write(f"igw replay: did not finish within {plan.timeout:g} s (--timeout)\n")
        return 1
    ranges = ", ".join(f"{p}:[{a},{b})" for p, (a, b) in sorted(report.ranges.items()))
    types = ", ".join(f"{t} {n}" for t, n in report.types.most_common()) or "none"
    verb = "would send" if plan.dry_run else "sent"
    sys.stdout.write(
        f"{plan.source} partitions {ranges}\n"
        f"scanned {report.scanned}, matched {report.matched} ({types}); "
        f"{verb} {report.matched if plan.dry_run else report.published} to {plan.destination}\n"
    )
    if report.statuses:
        sys.stdout.write("status: " + "  ".join(f"{k}: {n}" for k, n in sorted(report.statuses.items())) + "\n")
    if report.failed:
        sys.stdout.write(f"FAILED: {report.failed} record(s) were not accepted\n")
    return 1 if report.failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="re-publish records from one topic to another (e.g. re-drive dead letters)",
        description="Copy records within a time or offset range, optionally filtered, keeping keys and headers."
        " The range ends at the end offsets seen when the replay starts. Kafka settings come from the"
        " environment (KAFKA_BOOTSTRAP_SERVERS, IGW_TOPIC_PREFIX, ...).",
    )
    parser.add_argument(
        "source", metavar="FROM", help="topic to read: an igw name (deadletter, events, ...) or a full name"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", help="topic to publish to (igw name or full name)")
    target.add_argument(
        "--to-url",
        help="POST each record to this webhook URL with the signature Meta sent (igw_signature): re-drives"
        " dead letters through a fixed gateway",
    )
    parser.add_argument("--since", help="first record time, ISO 8601 (UTC unless given) or ms since the epoch")
    parser.add_argument("--until", help="end time (exclusive), ISO 8601 or ms")
    parser.add_argument("--from-offset", help="first offset: N for every partition, or P:N,P:N")
    parser.add_argument("--to-offset", help="end offset (exclusive): N, or P:N,P:N")
    parser.add_argument("--account", action="append", help="only this business account or Page id (repeatable)")
    parser.add_argument(
        "--type", action="append", help="only this event type (message, reaction, ...) or dead-letter reason"
    )
    parser.add_argument("--dry-run", action="store_true", help="count what would be replayed, publish nothing")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds (default 120)")
    parser.set_defaults(func=run)
