"""``igw erase``: erase one person across igw (docs/privacy.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from igw.config import Env, KafkaSettings
from igw.errors import SettingsError
from igw.keystore import KeyStore, open_keystore
from igw_tools.erase import PLATFORMS, Erasure, erase


async def _erase_all(kafka: KafkaSettings, keys_url: str | None, erasures: list[Erasure], timeout: float) -> int:
    keys: KeyStore | None = open_keystore(keys_url) if keys_url else None
    try:
        async with asyncio.timeout(timeout):
            reports = [await erase(kafka, keys, erasure) for erasure in erasures]
    finally:
        if keys is not None:
            await keys.close()
    for report in reports:
        for line in report.lines():
            sys.stdout.write(line + "\n")
    sys.stdout.write(
        "the agent and analytics apply the erasure when they read it from the erasures topic (seconds);"
        " the agent keeps only the ids its never-twice ledger needs\n"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    env = Env()
    kafka = KafkaSettings.from_env(env)
    keys_url = env.optional_str("IGW_CONTENT_KEYS")
    for value, what in ((args.user, "--user"), *((a, "--account") for a in args.account)):
        if not value.isdigit():
            raise SettingsError(what, f"expected the numeric id Meta uses, got {value!r}")
    erasures = [Erasure(args.platform, account, args.user) for account in args.account]
    try:
        return asyncio.run(_erase_all(kafka, keys_url, erasures, args.timeout))
    except TimeoutError:
        sys.stderr.write(
            f"igw erase: Kafka at {kafka.bootstrap_servers} did not answer within {args.timeout:g} s"
            " (check KAFKA_BOOTSTRAP_SERVERS; nothing was published)\n"
        )
        return 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="erase one person: their content keys, agent history, analytics state",
        description="Deletes the person's content keys (IGW_CONTENT_KEYS), so their messages in Kafka can no"
        " longer be read, and publishes an erasure record that the agent, analytics and your own consumers"
        " act on. See docs/privacy.md.",
    )
    parser.add_argument("--platform", choices=PLATFORMS, required=True)
    parser.add_argument(
        "--account", action="append", required=True, help="the business account or Page id (repeat for several)"
    )
    parser.add_argument("--user", required=True, help="the person's IGSID (Instagram) or PSID (Messenger)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for Kafka (default 30)")
    parser.set_defaults(func=run)
