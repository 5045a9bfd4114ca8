"""The agent consumer's settings: defaults, errors that name the variable, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.agent_replies.settings import SAMPLE_RULES, AgentSettings
from igw.errors import SettingsError

# Enough for the agent to start: rules to answer from, an account to send from.
READY = {"IGW_RULES_FILE": str(SAMPLE_RULES), "IGW_ACCESS_TOKEN": "t"}


def test_defaults() -> None:
    """With a rules file and a token: messages, postbacks and erasures, group igw-agent, in-process store."""
    settings = AgentSettings.from_env({"IGW_RULES_FILE": str(SAMPLE_RULES), "IGW_ACCESS_TOKEN": "t"})
    assert settings.consumer.group_id == "igw-agent"
    assert settings.consumer.topics == ("ig.messages", "ig.postbacks", "ig.erasures")
    assert settings.consumer.metrics_port == 9101
    assert settings.consumer.auto_offset_reset == "earliest"
    assert settings.agent == "rules"
    assert settings.redis_url is None
    assert settings.human_pause_seconds == 12 * 3600
    assert settings.window_seconds == 24 * 3600
    # Short leases and a short session: a dead replica's work is taken over within seconds.
    assert settings.lease_seconds == 15
    assert settings.consumer.session_timeout_ms == 10_000
    assert settings.echo_wait_seconds == 30


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "IGW_RULES_FILE"),
        ({"IGW_RULES_FILE": "/nonexistent/rules.yaml"}, "IGW_RULES_FILE"),
        ({"IGW_AGENT": "http"}, "IGW_AGENT_URL"),
        ({"IGW_AGENT": "http", "IGW_AGENT_URL": "ftp://x"}, "IGW_AGENT_URL"),
        ({"IGW_AGENT": "openai"}, "OPENAI_API_KEY"),
        ({"IGW_AGENT": "magic"}, "IGW_AGENT"),
        ({**READY, "IGW_AGENT_CONCURRENCY": "0"}, "IGW_AGENT_CONCURRENCY"),
        ({**READY, "IGW_HUMAN_PAUSE_SECONDS": "soon"}, "IGW_HUMAN_PAUSE_SECONDS"),
        (
            {**READY, "IGW_AGENT_STORE_TIMEOUT_SECONDS": "5", "IGW_LEDGER_LEASE_SECONDS": "10"},
            "IGW_AGENT_STORE_TIMEOUT_SECONDS",
        ),
        ({"IGW_RULES_FILE": str(SAMPLE_RULES)}, "IGW_ACCESS_TOKEN"),
        ({**READY, "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({**READY, "IGW_APP_ID": "my-app"}, "IGW_APP_ID"),
        ({**READY, "IGW_CONSUMER_INSTANCE_ID": "agent 1"}, "IGW_CONSUMER_INSTANCE_ID"),
    ],
)
def test_errors_name_the_variable(environ: dict[str, str], variable: str) -> None:
    """Each invalid or missing setting is reported with the variable that holds it."""
    with pytest.raises(SettingsError) as caught:
        AgentSettings.from_env(environ)
    assert caught.value.variable == variable


def test_describe_masks_secrets(tmp_path: Path) -> None:
    """The start-up description shows that secrets are set, never their values."""
    key_file = tmp_path / "key"
    key_file.write_text("sk-very-secret\n", encoding="utf-8")
    settings = AgentSettings.from_env(
        {
            "IGW_AGENT": "openai",
            "OPENAI_API_KEY_FILE": str(key_file),
            "IGW_AGENT_TOKEN": "agent-very-secret",
            "IGW_ACCESS_TOKEN": "ig-very-secret",
        }
    )
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.value == "sk-very-secret"
    described = repr(settings.describe()) + repr(settings)
    for secret in ("sk-very-secret", "agent-very-secret", "ig-very-secret"):
        assert secret not in described
