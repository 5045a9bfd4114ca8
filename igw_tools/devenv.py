"""What ``igw dev`` gives its processes, and ``<state dir>/dev.env``: what a tool needs to talk to them.

Development only. Local secrets are generated once and kept in ``dev.env`` (mode 600), which
also holds the broker's address and the settings the local broker needs (Tansu refuses
idempotent producers), so ``source .igw/dev.env`` is all a shell needs for ``igw simulate``,
``igw replay``, ``igw topics`` or a gateway of its own. A secret set in the environment of
``igw dev`` wins over the saved one; it is never printed and never written to ``dev.env``.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from igw.config import Env, KafkaSettings
from igw_tools.simulator import DEV_APP_ID

__all__ = [
    "DEV_INSTAGRAM_ACCOUNT",
    "DEV_PAGE_ACCOUNT",
    "DevSecrets",
    "Ports",
    "child_env",
    "read_env_file",
    "write_env_file",
]

# The accounts the README, `igw simulate` and the emulator agree on for local runs.
DEV_INSTAGRAM_ACCOUNT: Final = "17841400000000000"
DEV_PAGE_ACCOUNT: Final = "106000000000001"

# The secrets a gateway needs, with how the banner names them.
_SHOWN_SECRETS: Final = (("INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "verify token"), ("INSTAGRAM_APP_SECRET", "app secret"))

# Settings from the processes' environment that a tool in another shell needs too (dev.env).
_TOOL_SETTINGS: Final = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_ENABLE_IDEMPOTENCE",
    "IGW_TOPIC_PREFIX",
    "IGW_GRAPH_BASE_URL",
    "IGW_INSTAGRAM_GRAPH_BASE_URL",
    "IGW_ACCOUNTS_FILE",
    "IGW_APP_ID",
)


@dataclass(frozen=True, slots=True)
class Ports:
    gateway: int = 8080
    emulator: int = 8081
    kafka: int = 9092
    agent_metrics: int = 9101
    analytics_metrics: int = 9102
    reconcile_metrics: int = 9103


@dataclass(frozen=True, slots=True)
class DevSecrets:
    verify_token: str
    app_secret: str
    instagram_token: str
    page_token: str
    # Variables made up in this run: the banner shows them, once.
    generated: frozenset[str] = frozenset()
    # Variables taken from the environment of `igw dev`: never printed, never saved.
    from_environment: frozenset[str] = frozenset()

    @classmethod
    def load_or_create(cls, state_dir: Path, environ: Mapping[str, str]) -> DevSecrets:
        saved = read_env_file(state_dir / "dev.env")
        generated: set[str] = set()
        from_environment: set[str] = set()

        env = Env(environ)

        def given(name: str) -> str | None:
            """NAME, or the contents of the file NAME_FILE names, as every igw process reads a secret."""
            secret = env.secret(name)
            return secret.value if secret is not None else None

        def pick(name: str, make: Callable[[], str], given_value: str | None = None) -> str:
            # A shell that sourced dev.env hands the saved value back: that is not the user's own.
            if given_value and given_value != saved.get(name):
                from_environment.add(name)
                return given_value
            if saved.get(name):
                return saved[name]
            generated.add(name)
            return make()

        return cls(
            verify_token=pick(
                "INSTAGRAM_WEBHOOK_VERIFY_TOKEN",
                lambda: secrets.token_urlsafe(18),
                given("INSTAGRAM_WEBHOOK_VERIFY_TOKEN"),
            ),
            app_secret=pick("INSTAGRAM_APP_SECRET", lambda: secrets.token_hex(16), given("INSTAGRAM_APP_SECRET")),
            # The emulator's tokens are the stack's own: never taken from the environment.
            instagram_token=pick("IGW_DEV_INSTAGRAM_TOKEN", lambda: "IGdev" + secrets.token_urlsafe(24)),
            page_token=pick("IGW_DEV_PAGE_TOKEN", lambda: "EAAdev" + secrets.token_urlsafe(24)),
            generated=frozenset(generated),
            from_environment=frozenset(from_environment),
        )

    def values(self) -> dict[str, str]:
        return {
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": self.verify_token,
            "INSTAGRAM_APP_SECRET": self.app_secret,
            "IGW_DEV_INSTAGRAM_TOKEN": self.instagram_token,
            "IGW_DEV_PAGE_TOKEN": self.page_token,
        }

    def banner_lines(self, env_file: Path) -> list[str]:
        """What the banner says about the secrets: generated ones once, the environment's never."""
        lines = []
        values = self.values()
        shown = [f"{label} {values[name]}" for name, label in _SHOWN_SECRETS if name in self.generated]
        if shown:
            lines.append("generated  " + "   ".join(shown) + f"   (shown this once; saved in {env_file})")
        lines.extend(
            f"{label:<11}from the environment of igw dev (not shown, not saved)"
            for name, label in _SHOWN_SECRETS
            if name in self.from_environment
        )
        return lines

    def accounts_file(self, state_dir: Path) -> Path:
        """The accounts the agent sends as and the emulator accepts."""
        path = state_dir / "dev-accounts.json"
        accounts = [
            {"account_id": DEV_INSTAGRAM_ACCOUNT, "flavour": "ig_ig", "token_env": "IGW_DEV_INSTAGRAM_TOKEN"},
            {"account_id": DEV_PAGE_ACCOUNT, "flavour": "messenger", "token_env": "IGW_DEV_PAGE_TOKEN"},
        ]
        path.write_bytes(orjson.dumps(accounts, option=orjson.OPT_INDENT_2))
        return path


def read_env_file(path: Path) -> dict[str, str]:
    """``export NAME=value`` lines of a file written by :func:`write_env_file` (nothing when absent)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and not key.startswith("#"):
            words = shlex.split(value)
            values[key.strip()] = words[0] if words else ""
    return values


def write_env_file(path: Path, dev: DevSecrets, env: Mapping[str, str]) -> None:
    """dev.env: the saved secrets, and the settings a tool needs to reach this stack (mode 600)."""
    lines = [
        "# The local stack of `igw dev` (development only). In another shell: source this file",
        "# Secrets of this stack (a secret from the environment of igw dev is never saved here)",
    ]
    for name, value in dev.values().items():
        if name in dev.from_environment:
            lines.append(f"# {name}: from the environment of igw dev, not saved")
        else:
            lines.append(f"export {name}={shlex.quote(value)}")
    lines.append("# Where the broker and the Graph API emulator are; Tansu refuses idempotent producers")
    lines.extend(f"export {name}={shlex.quote(env[name])}" for name in _TOOL_SETTINGS if name in env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # before the secrets go in, also for a file an older version left readable
    path.write_text("\n".join(lines) + "\n")


def child_env(
    base: Mapping[str, str],
    dev: DevSecrets,
    kafka: KafkaSettings,
    ports: Ports,
    accounts: Path,
    *,
    spool_dir: Path | None = None,
) -> dict[str, str]:
    """The environment of every process of the stack: ``base`` with the stack's settings on top."""
    emulator = f"http://127.0.0.1:{ports.emulator}"
    env = dict(base)
    # The stack's values replace the environment's, a NAME_FILE too (a process refuses both).
    for name in dev.values():
        env.pop(f"{name}_FILE", None)
    env.update(dev.values())
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            # Tansu does not support aiokafka's idempotent producer.
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "IGW_TOPIC_PREFIX": kafka.topic_prefix,
            "IGW_GRAPH_BASE_URL": emulator,
            "IGW_INSTAGRAM_GRAPH_BASE_URL": emulator,
            "IGW_ACCOUNTS_FILE": str(accounts.resolve()),
            "IGW_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Echoes of the agent's own replies carry this app's id (igw simulate sends them so): they are
    # neither a person taking over (agent) nor a human reply (analytics).
    env.setdefault("IGW_APP_ID", DEV_APP_ID)
    env.setdefault("IGW_ANALYTICS_AGENT_APP_IDS", env["IGW_APP_ID"])
    # Tansu holds a group join for half the session timeout (15 s with the default 30 s): on a
    # laptop, a short session lets the consumers answer within seconds of the start.
    env.setdefault("IGW_CONSUMER_SESSION_TIMEOUT_MS", "3000")
    env.setdefault("IGW_CONSUMER_HEARTBEAT_MS", "500")
    if spool_dir is not None and Env(base).raw("IGW_SPOOL_DIR") is None:
        env["IGW_SPOOL_DIR"] = str(spool_dir)  # beside dev.env, whatever the working directory
    return env
