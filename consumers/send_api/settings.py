"""The Send API client's settings: one frozen object read from the environment at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumers.send_api.model import AccountConfig, Flavour
from igw.config import Env, Secret
from igw.errors import SettingsError

__all__ = ["REDIS_SCHEMES", "SendApiSettings", "load_accounts_file", "parse_accounts"]

_ACCOUNTS_VAR = "IGW_ACCOUNTS_FILE"
# What redis-py's from_url takes.
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class SendApiSettings:
    accounts: tuple[AccountConfig, ...] = ()
    graph_base_url: str = "https://graph.facebook.com"
    instagram_base_url: str = "https://graph.instagram.com"
    graph_version: str = "v25.0"
    # Per HTTP call; a send of several parts or retries takes longer.
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    # Retries stop when the next one would start later than this after the first attempt.
    max_retry_seconds: float = 60.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # Meta's published Send API rates per business account (text): IG-IG 100/s, Page token 300/s.
    ig_rate_per_second: float = 100.0
    page_rate_per_second: float = 300.0
    # Set: the limiter lives in Redis and is shared by every replica.
    redis_url: str | None = None
    rate_limit_key_prefix: str = "igw:sendapi:rl:"

    @classmethod
    def from_env(cls, env: Env | None = None) -> SendApiSettings:
        env = env or Env()
        # Class attributes of a slotted dataclass are slot descriptors, not defaults: use an instance.
        defaults = cls()
        # INSTAGRAM_APP_SECRET may list several secrets for webhook signatures; the first signs proofs.
        app_secrets = env.secrets("INSTAGRAM_APP_SECRET")
        default_secret = app_secrets[0] if app_secrets else None
        if not env.bool("IGW_APPSECRET_PROOF", True):
            default_secret = None
        accounts: list[AccountConfig] = []
        token = env.secret("IGW_ACCESS_TOKEN")
        if token is not None:
            # One Instagram-Login account, addressed as "me": the simplest setup.
            accounts.append(AccountConfig("me", Flavour.IG_IG, token))
        accounts_file = env.optional_str(_ACCOUNTS_VAR)
        if accounts_file is not None:
            accounts.extend(load_accounts_file(Path(accounts_file), env, default_app_secret=default_secret))
        ids = [account.account_id for account in accounts]
        duplicates = sorted({account_id for account_id in ids if ids.count(account_id) > 1})
        if duplicates:
            raise SettingsError(_ACCOUNTS_VAR, f"account ids configured twice: {', '.join(duplicates)}")
        graph_version = env.str("IGW_GRAPH_VERSION", defaults.graph_version)
        if not (graph_version.startswith("v") and graph_version[1:].replace(".", "").isdigit()):
            raise SettingsError("IGW_GRAPH_VERSION", f"expected a version like v25.0, got {graph_version!r}")
        return cls(
            accounts=tuple(accounts),
            graph_base_url=_base_url(env, "IGW_GRAPH_BASE_URL", defaults.graph_base_url),
            instagram_base_url=_base_url(env, "IGW_INSTAGRAM_GRAPH_BASE_URL", defaults.instagram_base_url),
            graph_version=graph_version,
            timeout_seconds=env.float("IGW_SEND_TIMEOUT_SECONDS", defaults.timeout_seconds, min_value=0.1),
            max_attempts=env.int("IGW_SEND_MAX_ATTEMPTS", defaults.max_attempts, min_value=1),
            max_retry_seconds=env.float("IGW_SEND_MAX_RETRY_SECONDS", defaults.max_retry_seconds, min_value=0.0),
            backoff_base_seconds=env.float(
                "IGW_SEND_BACKOFF_BASE_SECONDS", defaults.backoff_base_seconds, min_value=0.0
            ),
            backoff_max_seconds=env.float("IGW_SEND_BACKOFF_MAX_SECONDS", defaults.backoff_max_seconds, min_value=0.0),
            ig_rate_per_second=env.float("IGW_SEND_RATE_IG", defaults.ig_rate_per_second, min_value=0.1),
            page_rate_per_second=env.float("IGW_SEND_RATE_PAGE", defaults.page_rate_per_second, min_value=0.1),
            redis_url=env.url("REDIS_URL", None, schemes=REDIS_SCHEMES, show=False),
            rate_limit_key_prefix=env.str("IGW_SEND_RATE_KEY_PREFIX", defaults.rate_limit_key_prefix),
        )

    def rate_for(self, flavour: Flavour) -> float:
        return self.page_rate_per_second if flavour.uses_page_token else self.ig_rate_per_second


def _base_url(env: Env, name: str, default: str) -> str:
    return (env.url(name, default) or default).rstrip("/")


def load_accounts_file(path: Path, env: Env, *, default_app_secret: Secret | None = None) -> tuple[AccountConfig, ...]:
    """Accounts from a JSON file, or YAML (``.yaml``/``.yml``) when PyYAML is installed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(_ACCOUNTS_VAR, f"cannot read {path}: {exc.strerror or exc}") from None
    data: Any
    if path.suffix in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:
            raise SettingsError(_ACCOUNTS_VAR, "YAML needs PyYAML (pip install 'igw[yaml]'); or use JSON") from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            # Only where and what: PyYAML's full message quotes the line, which may hold a token.
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: not valid YAML: {problem}") from None
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SettingsError(_ACCOUNTS_VAR, f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    return parse_accounts(data, env, default_app_secret=default_app_secret)


def parse_accounts(data: Any, env: Env, *, default_app_secret: Secret | None = None) -> tuple[AccountConfig, ...]:
    """``[{account_id, flavour, token | token_env | token_file, app_secret | app_secret_env | app_secret_file}]``."""
    if isinstance(data, dict) and "accounts" in data:
        data = data["accounts"]
    if not isinstance(data, list):
        raise SettingsError(_ACCOUNTS_VAR, "expected a list of accounts")
    accounts = []
    for index, item in enumerate(data):
        where = f"account #{index + 1}"
        if not isinstance(item, dict):
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: expected an object")
        account_id = str(item.get("account_id") or "").strip()
        if not account_id:
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: account_id is required")
        where = f"account {account_id}"
        try:
            flavour = Flavour(str(item.get("flavour", "")).lower())
        except ValueError:
            choices = ", ".join(flavour.value for flavour in Flavour)
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: flavour must be one of {choices}") from None
        token = _secret_field(item, "token", env, where)
        if token is None:
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: needs token, token_env or token_file")
        app_secret = _secret_field(item, "app_secret", env, where)
        if app_secret is None and flavour.uses_page_token:
            app_secret = default_app_secret
        accounts.append(AccountConfig(account_id, flavour, token, app_secret))
    return tuple(accounts)


def _secret_field(item: dict[str, Any], name: str, env: Env, where: str) -> Secret | None:
    given = [key for key in (name, f"{name}_env", f"{name}_file") if item.get(key)]
    if len(given) > 1:
        raise SettingsError(_ACCOUNTS_VAR, f"{where}: set only one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    value = str(item[key]).strip()
    if key == name:
        return Secret(value)
    if key == f"{name}_env":
        secret = env.secret(value)
        if secret is None:
            raise SettingsError(_ACCOUNTS_VAR, f"{where}: {key} names {value}, which is not set")
        return secret
    try:
        text = Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(_ACCOUNTS_VAR, f"{where}: cannot read {key} {value}: {exc.strerror or exc}") from None
    if not text:
        raise SettingsError(_ACCOUNTS_VAR, f"{where}: {key} {value} is empty")
    return Secret(text)
