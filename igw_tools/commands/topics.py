"""``igw topics create|describe``: igw's topics with the configured partitions and replication."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka.errors import KafkaConnectionError, KafkaError

from igw.config import Env, KafkaSettings
from igw.preflight import check_kafka, kafka_unreachable
from igw.topics import TOPIC_NAMES, describe_topics, ensure_topics


async def _create(kafka: KafkaSettings, timeout: float) -> int:
    created = await ensure_topics(kafka, TOPIC_NAMES, timeout=timeout)
    for name in TOPIC_NAMES:
        topic = kafka.topic(name)
        state = "created" if topic in created else "exists"
        sys.stdout.write(f"{topic:<40} {state}\n")
    sys.stdout.write(
        f"partitions {kafka.partitions}, replication {kafka.replication_factor} for new topics"
        " (IGW_TOPIC_PARTITIONS, IGW_TOPIC_REPLICATION)\n"
    )
    return 0


async def _describe(kafka: KafkaSettings, timeout: float) -> int:
    infos = await describe_topics(kafka, TOPIC_NAMES, timeout=timeout)
    missing = 0
    sys.stdout.write(f"{'topic':<40} {'partitions':>10} {'replication':>11} {'records':>10}\n")
    for info in infos:
        if not info.exists:
            missing += 1
            sys.stdout.write(f"{info.name:<40} {'missing':>10}\n")
            continue
        sys.stdout.write(f"{info.name:<40} {info.partitions:>10} {info.replication:>11} {info.records:>10}\n")
    if missing:
        sys.stdout.write(f"{missing} topic(s) missing: run `igw topics create`\n")
    return 1 if missing else 0


def run(args: argparse.Namespace) -> int:
    kafka = KafkaSettings.from_env(Env())
    action = _create if args.action == "create" else _describe

    async def main() -> int:
        await check_kafka(kafka, timeout=args.timeout)
        return await action(kafka, args.timeout)

    try:
        return asyncio.run(main())
    except TimeoutError:
        sys.stderr.write(f"igw topics: Kafka at {kafka.bootstrap_servers} did not answer within {args.timeout:g} s\n")
        return 1
    except KafkaConnectionError:
        raise kafka_unreachable(kafka) from None
    except KafkaError as exc:
        # A refusal (ACLs, a managed service): the topics must be created by someone allowed to.
        sys.stderr.write(
            f"igw topics: Kafka refused: {type(exc).__name__}: {exc}"
            " (create the topics with an account allowed to, with the names and settings of docs/configuration.md)\n"
        )
        return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "topics",
        help="create or describe igw's Kafka topics",
        description="Topics <prefix>.messages, .postbacks, .events, .deadletter and .replies. Settings come from"
        " the environment: KAFKA_BOOTSTRAP_SERVERS, IGW_TOPIC_PREFIX, IGW_TOPIC_PARTITIONS, IGW_TOPIC_REPLICATION.",
    )
    parser.add_argument("action", nargs="?", choices=("create", "describe"), default="describe")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for Kafka (default 15)")
    parser.set_defaults(func=run)
