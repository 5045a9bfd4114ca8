"""Settings come from the environment; bad or missing values name the variable at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import DEFAULT_WEBHOOK_PATH, GatewaySettings
from igw.errors import SettingsError

BASE = {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "tok-123", "INSTAGRAM_APP_SECRET": "s1"}


def test_defaults() -> None:
    """With only the two secrets set, the documented defaults apply."""
    settings = GatewaySettings.from_env(BASE)
    assert settings.webhook_path == DEFAULT_WEBHOOK_PATH
    assert settings.kafka.topic_prefix == "ig"
    assert settings.kafka.enable_idempotence is True
    assert settings.kafka.acks == "all"
    assert settings.max_body_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize("missing", ["INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "INSTAGRAM_APP_SECRET"])
def test_missing_secret_is_a_startup_error(missing: str) -> None:
    """No insecure mode: a missing secret stops start-up and names the variable."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env(env)
    assert info.value.variable == missing


def test_secret_from_file(tmp_path: Path) -> None:
    """*_FILE variants read Docker/Kubernetes secrets; comma-separated secrets give several."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("first, second\n")
    settings = GatewaySettings.from_env(
        {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "tok", "INSTAGRAM_APP_SECRET_FILE": str(secret_file)}
    )
    assert [s.value for s in settings.app_secrets] == ["first", "second"]


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    """A *_FILE that cannot be read is reported against the *_FILE variable, without the content."""
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env({**BASE, "INSTAGRAM_APP_SECRET": "", "INSTAGRAM_APP_SECRET_FILE": "/nonexistent/x"})
    assert info.value.variable == "INSTAGRAM_APP_SECRET_FILE"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_ENABLE_IDEMPOTENCE", "maybe"),
        ("IGW_MAX_BODY_BYTES", "lots"),
        ("IGW_PUBLISH_TIMEOUT_SECONDS", "9"),
        ("IGW_WEBHOOK_PATH", "no-slash"),
        ("IGW_TOPIC_PREFIX", "bad prefix!"),
        ("KAFKA_COMPRESSION", "brotli"),
        ("IGW_SPOOL_AFTER_SECONDS", "4.5"),
        ("IGW_SPOOL_MAX_BYTES", "10"),
        ("IGW_SPOOL_ENABLED", "perhaps"),
        ("IGW_BODY_READ_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    """Each invalid value is reported with the variable that holds it."""
    with pytest.raises(SettingsError) as info:
        GatewaySettings.from_env({**BASE, variable: value})
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_secrets_never_show() -> None:
    """repr() and describe() mask every secret."""
    settings = GatewaySettings.from_env(
        {"INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "tok-very-secret", "INSTAGRAM_APP_SECRET": "s3cr3t-value"}
    )
    shown = repr(settings) + str(settings.describe())
    assert "tok-very-secret" not in shown
    assert "s3cr3t-value" not in shown


def test_spool_settings() -> None:
    """The spool is on by default under .igw/spool; its directory, limits and deadline are settable, or it is off."""
    default = GatewaySettings.from_env(BASE)
    assert default.spool_dir == Path(".igw/spool")
    assert default.spool_after == 1.0
    custom = GatewaySettings.from_env(
        {
            **BASE,
            "IGW_SPOOL_DIR": "/var/lib/igw/spool",
            "IGW_SPOOL_AFTER_SECONDS": "0.5",
            "IGW_SPOOL_MAX_BYTES": "64_000_000",
            "IGW_SPOOL_MAX_AGE_SECONDS": "3600",
        }
    )
    assert (custom.spool_dir, custom.spool_after) == (Path("/var/lib/igw/spool"), 0.5)
    assert (custom.spool_max_bytes, custom.spool_max_age_seconds) == (64_000_000, 3600.0)
    assert GatewaySettings.from_env({**BASE, "IGW_SPOOL_ENABLED": "false"}).spool_dir is None
