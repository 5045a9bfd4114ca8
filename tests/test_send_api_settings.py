"""The Send API settings come from the environment; each error names the variable at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.send_api.client import Flavour
from consumers.send_api.settings import SendApiSettings
from igw.config import Env
from igw.errors import SettingsError


def test_defaults() -> None:
    """Without any variable: Meta's hosts, v25.0, no accounts, in-process limiter."""
    settings = SendApiSettings.from_env(Env({}))
    assert settings.graph_base_url == "https://graph.facebook.com"
    assert settings.instagram_base_url == "https://graph.instagram.com"
    assert settings.graph_version == "v25.0"
    assert settings.accounts == ()
    assert settings.redis_url is None
    assert (settings.rate_for(Flavour.IG_IG), settings.rate_for(Flavour.MESSENGER)) == (100.0, 300.0)


def test_access_token_alone_is_one_ig_account_as_me() -> None:
    """IGW_ACCESS_TOKEN alone gives one IG-IG account `me`, never shown in a repr."""
    settings = SendApiSettings.from_env(
        Env({"IGW_ACCESS_TOKEN": "IGQV-secret", "IGW_SEND_TIMEOUT_SECONDS": "3", "REDIS_URL": "redis://x:6379"})
    )
    [account] = settings.accounts
    assert (account.account_id, account.flavour, account.token.value) == ("me", Flavour.IG_IG, "IGQV-secret")
    assert settings.timeout_seconds == 3.0
    assert settings.redis_url == "redis://x:6379"
    assert "IGQV-secret" not in repr(settings)


def test_accounts_file_json(tmp_path: Path) -> None:
    """token, token_env and token_file all work; Page-token accounts take INSTAGRAM_APP_SECRET's first secret."""
    token_file = tmp_path / "token"
    token_file.write_text("page-token-from-file\n")
    accounts = [
        {"account_id": "1784", "flavour": "ig_ig", "token": "ig-token"},
        {"account_id": "1001", "flavour": "ig_fb", "token_env": "PAGE_TOKEN_1001"},
        {"account_id": "1002", "flavour": "messenger", "token_file": str(token_file), "app_secret": "own"},
    ]
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(accounts))
    settings = SendApiSettings.from_env(
        Env({"IGW_ACCOUNTS_FILE": str(path), "PAGE_TOKEN_1001": "page-token-env", "INSTAGRAM_APP_SECRET": "s1,s2"})
    )
    ig, igfb, messenger = settings.accounts
    assert (ig.token.value, ig.app_secret) == ("ig-token", None)
    assert igfb.token.value == "page-token-env"
    assert igfb.app_secret is not None
    assert igfb.app_secret.value == "s1"
    assert messenger.token.value == "page-token-from-file"
    assert messenger.app_secret is not None
    assert messenger.app_secret.value == "own"


def test_appsecret_proof_can_be_switched_off(tmp_path: Path) -> None:
    """IGW_APPSECRET_PROOF=false keeps INSTAGRAM_APP_SECRET out of the Page-token accounts."""
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"account_id": "1", "flavour": "messenger", "token": "t"}]))
    settings = SendApiSettings.from_env(
        Env({"IGW_ACCOUNTS_FILE": str(path), "INSTAGRAM_APP_SECRET": "s", "IGW_APPSECRET_PROOF": "false"})
    )
    assert settings.accounts[0].app_secret is None


def test_accounts_file_yaml(tmp_path: Path) -> None:
    """A .yaml accounts file is read with PyYAML."""
    path = tmp_path / "accounts.yaml"
    path.write_text("accounts:\n  - account_id: '42'\n    flavour: messenger\n    token: t42\n")
    [account] = SendApiSettings.from_env(Env({"IGW_ACCOUNTS_FILE": str(path)})).accounts
    assert (account.account_id, account.flavour) == ("42", Flavour.MESSENGER)


@pytest.mark.parametrize(
    ("environ", "accounts", "variable", "problem"),
    [
        ({"IGW_GRAPH_BASE_URL": "graph.facebook.com"}, None, "IGW_GRAPH_BASE_URL", "http"),
        ({"IGW_GRAPH_VERSION": "25"}, None, "IGW_GRAPH_VERSION", "v25.0"),
        ({"IGW_SEND_MAX_ATTEMPTS": "0"}, None, "IGW_SEND_MAX_ATTEMPTS", "at least 1"),
        ({}, [{"account_id": "1", "flavour": "whatsapp", "token": "t"}], "IGW_ACCOUNTS_FILE", "flavour"),
        ({}, [{"account_id": "1", "flavour": "messenger"}], "IGW_ACCOUNTS_FILE", "token"),
        ({}, [{"account_id": "1", "flavour": "messenger", "token_env": "NOPE"}], "IGW_ACCOUNTS_FILE", "NOPE"),
        (
            {},
            [{"account_id": "1", "flavour": "messenger", "token": "a", "token_env": "B"}],
            "IGW_ACCOUNTS_FILE",
            "only one",
        ),
        (
            {},
            [
                {"account_id": "1", "flavour": "messenger", "token": "a"},
                {"account_id": "1", "flavour": "ig_fb", "token": "b"},
            ],
            "IGW_ACCOUNTS_FILE",
            "twice",
        ),
    ],
)
def test_errors_name_the_variable(
    tmp_path: Path, environ: dict[str, str], accounts: list[dict[str, str]] | None, variable: str, problem: str
) -> None:
    """Invalid settings raise SettingsError naming the variable and the problem, without secrets."""
    environ = dict(environ)
    if accounts is not None:
        path = tmp_path / "accounts.json"
        path.write_text(json.dumps(accounts))
        environ["IGW_ACCOUNTS_FILE"] = str(path)
    with pytest.raises(SettingsError) as caught:
        SendApiSettings.from_env(Env(environ))
    assert caught.value.variable == variable
    assert problem in caught.value.problem


def test_unreadable_accounts_file(tmp_path: Path) -> None:
    """A missing accounts file is reported against IGW_ACCOUNTS_FILE."""
    with pytest.raises(SettingsError, match="IGW_ACCOUNTS_FILE: cannot read"):
        SendApiSettings.from_env(Env({"IGW_ACCOUNTS_FILE": str(tmp_path / "missing.json")}))
