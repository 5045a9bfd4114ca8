"""``igw erase``: erase one person across igw (docs/privacy.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka.errors import KafkaConnectionError

from consumers.send_api.settings import SendApiSettings
from igw.config import Env, KafkaSettings
from igw.errors import SettingsError
from igw.keystore import KeyStore, keystore_url, open_keystore
from igw.preflight import check_kafka, kafka_unreachable
from igw_tools.deletion_requests import process_requests
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


async def _requests(env: Env, kafka: KafkaSettings, keys_url: str, app_id: str | None, timeout: float) -> int:
    send_api = SendApiSettings.from_env(env)
    app_secret = env.secret("INSTAGRAM_APP_SECRET")
    keys = open_keystore(keys_url)
    try:
        outcomes = await process_requests(
            kafka,
            keys,
            send_api.accounts,
            graph_url=f"{send_api.graph_base_url}/{send_api.graph_version}",
            app_id=app_id,
            app_secret=app_secret.value.split(",")[0].strip() if app_secret else None,
            timeout=timeout,
        )
    finally:
        await keys.close()
    for outcome in outcomes:
        what = ", ".join(outcome.erased) or "nothing erased"
        sys.stdout.write(
            f"request {outcome.code}: {outcome.status} ({what}){': ' + outcome.reason if outcome.reason else ''}\n"
        )
    sys.stdout.write(f"{len(outcomes)} pending deletion request(s) processed\n")
    return 0


def run(args: argparse.Namespace) -> int:
    # Every setting first: a bad one stops the command before anything is erased.
    env = Env()
    kafka = KafkaSettings.from_env(env)
    keys_url = keystore_url(env, "IGW_CONTENT_KEYS")
    app_id = env.optional_str("IGW_APP_ID")
    if app_id is not None and not app_id.isdigit():
        raise SettingsError("IGW_APP_ID", f"expected the app's numeric id, got {app_id!r}")
    if args.requests:
        if keys_url is None:
            raise SettingsError(
                "IGW_CONTENT_KEYS", "deletion requests are tracked in the key store; set it as the gateway has it"
            )
    elif not (args.platform and args.account and args.user):
        raise SettingsError("igw erase", "give --platform, --account and --user (or --requests)")
    else:
        for value, what in ((args.user, "--user"), *((a, "--account") for a in args.account)):
            if not value.isdigit():
                raise SettingsError(what, f"expected the numeric id Meta uses, got {value!r}")

    async def main() -> int:
        # Kafka first: keys are deleted only when the erasure record can be published right after.
        await check_kafka(kafka, timeout=min(args.timeout, 10.0))
        if args.requests:
            assert keys_url is not None
            return await _requests(env, kafka, keys_url, app_id, args.timeout)
        erasures = [Erasure(args.platform, account, args.user) for account in args.account]
        return await _erase_all(kafka, keys_url, erasures, args.timeout)

    try:
        return asyncio.run(main())
    except KafkaConnectionError:
        raise kafka_unreachable(kafka) from None
    except TimeoutError:
        sys.stderr.write(
            f"igw erase: Kafka at {kafka.bootstrap_servers} did not answer within {args.timeout:g} s"
            " (check KAFKA_BOOTSTRAP_SERVERS, then run the same command again)\n"
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
    parser.add_argument("--platform", choices=PLATFORMS)
    parser.add_argument("--account", action="append", help="the business account or Page id (repeat for several)")
    parser.add_argument("--user", help="the person's IGSID (Instagram) or PSID (Messenger)")
    parser.add_argument(
        "--requests",
        action="store_true",
        help="carry out the data deletion requests Meta sent to the gateway's callback (run it daily)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for Kafka (default 30)")
    parser.set_defaults(func=run)
