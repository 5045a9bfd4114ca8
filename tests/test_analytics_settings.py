"""Analytics settings from the environment and the ``igw analytics`` command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.analytics.settings import AnalyticsSettings
from igw.errors import SettingsError
from igw_tools.cli import build_parser


def test_defaults_read_every_topic_in_its_own_group_on_port_9102() -> None:
    """Without settings: group igw-analytics, metrics port 9102, all five topics, rollups off."""
    settings = AnalyticsSettings.from_env({})
    assert settings.group_id == "igw-analytics"
    assert settings.consumer.metrics_port == 9102
    assert sorted(settings.topics().values()) == [
        "deadletter",
        "erasures",
        "events",
        "messages",
        "postbacks",
        "replies",
    ]
    assert settings.consumer.topics == tuple(settings.topics())
    assert settings.rollup_path is None


def test_environment_sets_group_bounds_and_rollup() -> None:
    """The analytics variables reach the settings object."""
    settings = AnalyticsSettings.from_env(
        {
            "IGW_ANALYTICS_GROUP": "biz",
            "IGW_TOPIC_PREFIX": "shop",
            "IGW_ANALYTICS_TOP_PAYLOADS": "5",
            "IGW_ANALYTICS_PAYLOADS": "BOOK, HUMAN",
            "IGW_ANALYTICS_AGENT_APP_IDS": "123",
            "IGW_ANALYTICS_ROLLUP_PATH": "/data/igw/rollup.sqlite",
        }
    )
    assert settings.group_id == "biz"
    assert "shop.replies" in settings.topics()
    assert settings.top_payloads == 5
    assert settings.pinned_payloads == ("BOOK", "HUMAN")
    assert settings.agent_app_ids == frozenset({"123"})
    assert settings.rollup_path == Path("/data/igw/rollup.sqlite")


def test_invalid_value_names_the_variable() -> None:
    """A bad number is reported with the variable that holds it."""
    with pytest.raises(SettingsError, match="IGW_ANALYTICS_DEDUP_HOURS"):
        AnalyticsSettings.from_env({"IGW_ANALYTICS_DEDUP_HOURS": "two days"})


def test_cli_has_the_analytics_command_with_a_metrics_port() -> None:
    """``igw analytics --metrics-port`` parses."""
    args = build_parser().parse_args(["analytics", "--metrics-port", "9999"])
    assert args.command == "analytics"
    assert args.metrics_port == 9999
