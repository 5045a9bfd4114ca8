"""``igw check --subscription`` asks the Graph API (the emulator) whether Meta still sends each account's webhooks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from igw_tools.graph_conversations import ConversationsConfig
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, StartEmulator
from tests.plugins.reconcile import emulator_json
from tests.plugins.tools import run_cli

APP = ConversationsConfig(app_secret="app-secret-0009", callback_url="https://hooks.example/api/v1/instagram/webhook")


@pytest.fixture
async def configured(start_graph_emulator: StartEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    accounts = (IG_ACCOUNT, MESSENGER_ACCOUNT)
    emulator = await start_graph_emulator(EmulatorConfig(accounts=accounts), APP)
    path = tmp_path / "accounts.json"
    path.write_bytes(
        orjson.dumps(
            [
                {"account_id": a.account_id, "flavour": str(a.flavour), "token": a.token.value}
                | ({"app_secret": a.app_secret.value} if a.app_secret else {})
                for a in accounts
            ]
        )
    )
    for name, value in {
        "IGW_ACCOUNTS_FILE": str(path),
        "IGW_GRAPH_BASE_URL": emulator.base_url,
        "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator.base_url,
        "IGW_APP_ID": APP.app_id,
        "IGW_APP_ACCESS_TOKEN": f"{APP.app_id}|{APP.app_secret}",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IGW_ACCESS_TOKEN", raising=False)
    return emulator.base_url


async def test_subscribed_accounts_pass(configured: str) -> None:
    """Every account listing the app with messages, and the app's objects active: exit 0, one PASS each."""
    status, out, err = await run_cli(["check", "--subscription"])
    assert status == 0, out + err
    for name in (f"subscription {IG_ACCOUNT.account_id}", f"subscription {MESSENGER_ACCOUNT.account_id}"):
        assert f"PASS  {name}" in out
    assert "PASS  app object instagram" in out
    assert APP.app_secret not in out
    assert IG_ACCOUNT.token.value not in out


async def test_a_dropped_subscription_fails_with_what_to_do(configured: str) -> None:
    """Once Meta drops an account (and deactivates the app), the check fails and says how to subscribe again."""
    await emulator_json(configured, "/_emulator/subscriptions", {"subscribed": False})
    status, out, _ = await run_cli(["check", "--subscription"])
    assert status == 1
    assert f"FAIL  subscription {IG_ACCOUNT.account_id}" in out
    assert "subscribed_apps?subscribed_fields=" in out
    assert "FAIL  app object page" in out
    assert "verdict: NOT ready" in out


async def test_no_url_and_no_subscription_is_a_usage_error() -> None:
    """Without a URL there is nothing to check unless --subscription asks for the Graph check."""
    status, _, err = await run_cli(["check"])
    assert status == 2
    assert "--subscription" in err
