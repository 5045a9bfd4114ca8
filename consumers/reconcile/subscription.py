"""Is Meta still sending this app the accounts' webhooks? ``subscribed_apps`` and the app's ``subscriptions``.

After an hour of failed deliveries Meta disables the webhook and removes the app from each
account's subscriptions: nothing arrives any more, and nothing says so. Each pass reads, per
account, ``GET /{page-id}/subscribed_apps`` (``/me/subscribed_apps`` with an Instagram-Login
token): the account counts as subscribed while an app (this app, when ``IGW_APP_ID`` is set)
is listed with the ``messages`` field. With ``IGW_APP_ACCESS_TOKEN`` it also reads
``GET /{app-id}/subscriptions``: each object's (``instagram``, ``page``) ``active`` flag and fields.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from consumers.reconcile.graph import Endpoint, GraphReader
from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.settings import ReconcileSettings
from consumers.send_api.errors import SendError
from consumers.send_api.model import AccountConfig, Flavour

__all__ = ["SubscriptionWatch", "app_objects_active", "subscribed"]

log = logging.getLogger(__name__)

REQUIRED_FIELD = "messages"


def subscribed(body: Any, app_id: str | None) -> bool:
    """Whether ``subscribed_apps``'s answer lists the app (any app without an id) with ``messages``."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return False
    for entry in data:
        if not isinstance(entry, dict):
            continue
        if app_id is not None and str(entry.get("id")) != app_id:
            continue
        fields = entry.get("subscribed_fields")
        names = {f if isinstance(f, str) else f.get("name") for f in fields} if isinstance(fields, list) else set()
        if REQUIRED_FIELD in names:
            return True
    return False


def app_objects_active(body: Any) -> dict[str, bool]:
    """``{object: active}`` from the app's ``subscriptions``: active and subscribed to ``messages``."""
    data = body.get("data") if isinstance(body, dict) else None
    result: dict[str, bool] = {}
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("object"), str):
            continue
        fields = entry.get("fields")
        names = {f.get("name") if isinstance(f, dict) else f for f in fields} if isinstance(fields, list) else set()
        result[entry["object"]] = bool(entry.get("active")) and REQUIRED_FIELD in names
    return result


class SubscriptionWatch:
    def __init__(self, settings: ReconcileSettings, reader: GraphReader, metrics: ReconcileMetrics) -> None:
        self._settings = settings
        self._reader = reader
        self._metrics = metrics
        self._last: dict[str, bool] = {}

    async def check(
        self, accounts: Sequence[AccountConfig], label: Callable[[AccountConfig], str], deadline: float
    ) -> dict[str, bool]:
        """Each account's subscription (accounts that could not be read are left out), gauges set."""
        found: dict[str, bool] = {}
        for account in accounts:
            path = "me/subscribed_apps" if account.flavour is Flavour.IG_IG else f"{account.account_id}/subscribed_apps"
            name = label(account)
            try:
                body = await self._reader.get(account, path, {}, Endpoint.SUBSCRIBED_APPS, deadline=deadline)
            except SendError as err:
                log.warning("subscription of account %s not checked: %s", name, err)
                continue
            active = subscribed(body, self._settings.app_id)
            found[name] = active
            self._metrics.subscription_active.labels(name).set(1 if active else 0)
            self._report(name, active)
        if self._settings.app_token is not None and self._settings.app_id is not None:
            app_id = self._settings.app_id
            try:
                body = await self._reader.get_app(app_id, self._settings.app_token, f"{app_id}/subscriptions", {})
            except SendError as err:
                log.warning("the app's webhook subscriptions were not checked: %s", err)
            else:
                for obj, active in app_objects_active(body).items():
                    self._metrics.app_subscription_active.labels(obj).set(1 if active else 0)
                    self._report(f"app object {obj}", active)
        return found

    def _report(self, name: str, active: bool) -> None:
        """Log each change (and an inactive subscription at the first check) once."""
        before = self._last.get(name)
        self._last[name] = active
        if active and before is False:
            log.info("webhook subscription of %s is active again", name)
        elif not active and before is not False:
            log.error(
                "webhook subscription of %s is MISSING: Meta sends it no webhooks. Meta disables a webhook after "
                "about an hour of failed deliveries. Fix the endpoint (igw check), then subscribe again "
                "(POST /{page-id or me}/subscribed_apps?subscribed_fields=messages,...); reconcile recovers "
                "what it can meanwhile",
                name,
            )
