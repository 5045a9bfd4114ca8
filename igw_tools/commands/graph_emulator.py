"""``igw graph-emulator``: run the local Graph API emulator (never a production path)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.log import access_logger

from consumers.send_api.settings import load_accounts_file
from igw.config import Env, Secret
from igw.preflight import ListenSettings, check_listen
from igw_tools.graph_conversations import ConversationsConfig
from igw_tools.graph_emulator import EmulatorAccessLogger, EmulatorConfig, create_emulator_app

__all__ = ["register", "run"]

_DESCRIPTION = (
    "Run a LOCAL stand-in for Meta's Graph API Send endpoints, for development and tests. It is not "
    "Meta and never a production path: nothing it accepts reaches anyone. Point IGW_GRAPH_BASE_URL and "
    "IGW_INSTAGRAM_GRAPH_BASE_URL at it. It also serves the Conversations API and webhook subscriptions "
    "(igw reconcile). Control endpoints: POST /_emulator/inbound, POST /_emulator/failures, GET|DELETE "
    "/_emulator/messages, GET /_emulator/stats, POST|GET|DELETE /_emulator/conversations, POST "
    "/_emulator/subscriptions, GET /_emulator/graph-calls, POST /_emulator/graph-failures, GET /healthz."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "graph-emulator", help="run the local Graph API emulator (development only)", description=_DESCRIPTION
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to listen on (default 8081)")
    parser.add_argument(
        "--accounts-file",
        type=Path,
        default=None,
        help="accounts (JSON, or YAML with PyYAML) in IGW_ACCOUNTS_FILE's format; without it any token is accepted",
    )
    parser.add_argument("--no-window", action="store_true", help="do not enforce the 24 h messaging window")
    parser.add_argument(
        "--inbound-grace",
        type=float,
        default=0.0,
        help="seconds to wait for news of a user's message before refusing a send as outside the window "
        "(igw dev feeds inbound events from Kafka and may lag the agent by a moment)",
    )
    parser.add_argument(
        "--require-appsecret-proof", action="store_true", help="refuse Page-token calls without appsecret_proof"
    )
    defaults = EmulatorConfig()
    parser.add_argument(
        "--rate-ig",
        type=_positive,
        default=defaults.ig_rate_per_second,
        help=f"sends per second per Instagram-Login account, then code 4 (default {defaults.ig_rate_per_second:g})",
    )
    parser.add_argument(
        "--rate-page",
        type=_positive,
        default=defaults.page_rate_per_second,
        help=f"sends per second per Page-token account, then code 613 (default {defaults.page_rate_per_second:g})",
    )
    parser.add_argument(
        "--max-records",
        type=int,
        default=defaults.max_records,
        help=f"newest sends kept for GET /_emulator/messages (default {defaults.max_records})",
    )
    reads = ConversationsConfig()
    parser.add_argument(
        "--read-rate",
        type=_positive,
        default=reads.read_rate_per_second,
        help="Conversations API reads per second per account, then code 80002 (Instagram) or 80006 (Messenger)"
        f" (default {reads.read_rate_per_second:g}, Meta's)",
    )
    parser.add_argument(
        "--app-id",
        default=defaults.app_id,
        help=f"the app: subscribed_apps lists it, Messenger echoes carry it (default {defaults.app_id}, igw dev's;"
        " the agent's IGW_APP_ID)",
    )
    parser.add_argument(
        "--app-secret",
        default=None,
        help="with it, GET /{app-id}/subscriptions wants the app token <app-id>|<app-secret>; without, any secret",
    )
    parser.add_argument(
        "--echo-webhook",
        default=None,
        metavar="URL",
        help="post the echo of every accepted message to this webhook URL (a gateway's), signed with "
        "INSTAGRAM_APP_SECRET as Meta signs it",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    parser.set_defaults(func=run)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_config(args: argparse.Namespace, env: Env | None = None) -> EmulatorConfig:
    env = env or Env()
    accounts = load_accounts_file(args.accounts_file, env) if args.accounts_file is not None else ()
    defaults = EmulatorConfig()
    echo_webhook = getattr(args, "echo_webhook", None)
    echo_secret: Secret | None = None
    if echo_webhook:
        # The gateway accepts any of a comma-separated list; the first one signs.
        echo_secret = env.secrets(
            "INSTAGRAM_APP_SECRET", required_as="what --echo-webhook signs the echoes with, as Meta does"
        )[0]
    return EmulatorConfig(
        accounts=accounts,
        enforce_window=not args.no_window,
        inbound_grace_seconds=args.inbound_grace,
        require_appsecret_proof=args.require_appsecret_proof,
        # Namespaces built by hand (older callers) may lack the newer options.
        ig_rate_per_second=getattr(args, "rate_ig", defaults.ig_rate_per_second),
        page_rate_per_second=getattr(args, "rate_page", defaults.page_rate_per_second),
        max_records=getattr(args, "max_records", defaults.max_records),
        echo_webhook_url=echo_webhook,
        echo_app_secret=echo_secret,
        app_id=getattr(args, "app_id", defaults.app_id),
    )


def build_read_config(args: argparse.Namespace) -> ConversationsConfig:
    defaults = ConversationsConfig()
    return ConversationsConfig(
        app_id=getattr(args, "app_id", defaults.app_id),
        app_secret=getattr(args, "app_secret", None),
        read_rate_per_second=getattr(args, "read_rate", defaults.read_rate_per_second),
    )


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    check_listen(args.host, args.port, settings=ListenSettings(host="--host", port="--port"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger(__name__).warning(
        "Graph API emulator on http://%s:%d: a local stand-in for development, not Meta", args.host, args.port
    )
    web.run_app(
        create_emulator_app(config, conversations=build_read_config(args)),
        host=args.host,
        port=args.port,
        print=None,
        access_log_class=EmulatorAccessLogger,
        access_log=None if getattr(args, "no_access_log", False) else access_logger,
    )
    return 0
