"""``igw check --subscription``: does Meta still send this app each account's webhooks? Asked of the Graph API.

For each configured account (``IGW_ACCESS_TOKEN`` / ``IGW_ACCOUNTS_FILE``), ``subscribed_apps``
must list the app (``IGW_APP_ID`` when set) with the ``messages`` field; with
``IGW_APP_ACCESS_TOKEN``, the app's own ``subscriptions`` must show each object active, and
their callback URL is compared with the URL being checked. The same reads and the same rules as
``igw reconcile`` (docs/reconcile.md), each with a verdict and a likely cause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from consumers.reconcile.graph import Endpoint, GraphReader
from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.settings import ReconcileSettings
from consumers.reconcile.subscription import REQUIRED_FIELD, subscribed
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.model import Flavour
from consumers.send_api.settings import SendApiSettings
from igw.config import Env

__all__ = ["SubscriptionChecker", "SubscriptionResult"]

_RESUBSCRIBE = (
    "Meta disables a webhook after about an hour of failed deliveries and unsubscribes the app: make the "
    "endpoint pass `igw check URL`, then subscribe again: POST /{page-id}/subscribed_apps?subscribed_fields="
    "messages,messaging_postbacks (/me/subscribed_apps with an Instagram-Login token)"
)


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    name: str
    ok: bool
    detail: str
    cause: str | None = None
    warning: bool = False


def _cause_of(err: SendError) -> str:
    if err.error_class is ErrorClass.TOKEN_INVALID:
        return "the token is refused (expired or revoked): renew it in IGW_ACCESS_TOKEN / IGW_ACCOUNTS_FILE"
    if err.error_class is ErrorClass.RATE_LIMITED:
        return "Meta throttles this account's reads right now: try again in a minute"
    return f"Meta answered {err}: check the account id, the token's permissions and IGW_GRAPH_BASE_URL"


class SubscriptionChecker:
    def __init__(self, settings: ReconcileSettings, *, callback_url: str | None = None) -> None:
        self._settings = settings
        self._callback_url = callback_url

    @classmethod
    def from_env(cls, env: Env, *, callback_url: str | None = None) -> SubscriptionChecker:
        send_api = SendApiSettings.from_env(env)
        settings = ReconcileSettings(
            send_api=send_api,
            app_id=env.optional_str("IGW_APP_ID"),
            app_token=env.secret("IGW_APP_ACCESS_TOKEN"),
            max_attempts=2,
            backoff_base_seconds=0.5,
            backoff_max_seconds=2.0,
        )
        return cls(settings, callback_url=callback_url)

    async def run(self) -> list[SubscriptionResult]:
        settings = self._settings
        results: list[SubscriptionResult] = []
        if not settings.send_api.accounts:
            results.append(
                SubscriptionResult(
                    "subscription",
                    False,
                    "no account configured",
                    "set IGW_ACCESS_TOKEN or IGW_ACCOUNTS_FILE (the accounts the agent answers for)",
                )
            )
        deadline = time.monotonic() + 30.0
        async with GraphReader(settings, ReconcileMetrics()) as reader:
            for account in settings.send_api.accounts:
                name = f"subscription {account.account_id}"
                path = (
                    "me/subscribed_apps"
                    if account.flavour is Flavour.IG_IG
                    else f"{account.account_id}/subscribed_apps"
                )
                try:
                    body = await reader.get(account, path, {}, Endpoint.SUBSCRIBED_APPS, deadline=deadline)
                except SendError as err:
                    results.append(SubscriptionResult(name, False, "subscribed_apps could not be read", _cause_of(err)))
                    continue
                app = f"app {settings.app_id}" if settings.app_id else "an app"
                if subscribed(body, settings.app_id):
                    results.append(SubscriptionResult(name, True, f"{app} is subscribed with {REQUIRED_FIELD}"))
                else:
                    results.append(
                        SubscriptionResult(
                            name, False, f"Meta lists no subscription of {app} with messages", _RESUBSCRIBE
                        )
                    )
            if settings.app_token is not None and settings.app_id is not None:
                results.extend(await self._app(reader))
        return results

    async def _app(self, reader: GraphReader) -> list[SubscriptionResult]:
        settings = self._settings
        assert settings.app_id is not None
        assert settings.app_token is not None
        try:
            body = await reader.get_app(settings.app_id, settings.app_token, f"{settings.app_id}/subscriptions", {})
        except SendError as err:
            cause = "check IGW_APP_ID and IGW_APP_ACCESS_TOKEN ('<app id>|<app secret>')"
            return [SubscriptionResult("app subscriptions", False, f"could not be read: {err}", cause)]
        results = []
        data = body.get("data")
        for entry in data if isinstance(data, list) else []:
            if not isinstance(entry, dict):
                continue
            obj = str(entry.get("object"))
            fields = {f.get("name") if isinstance(f, dict) else f for f in entry.get("fields") or []}
            name = f"app object {obj}"
            if not entry.get("active") or REQUIRED_FIELD not in fields:
                detail = "inactive" if not entry.get("active") else "not subscribed to messages"
                results.append(SubscriptionResult(name, False, detail, _RESUBSCRIBE))
            elif self._callback_url and entry.get("callback_url") != self._callback_url:
                results.append(
                    SubscriptionResult(
                        name,
                        True,
                        f"active, but Meta calls {entry.get('callback_url')}",
                        "the App Dashboard's callback URL is not the URL checked here",
                        warning=True,
                    )
                )
            else:
                results.append(SubscriptionResult(name, True, "active with messages"))
        return results
