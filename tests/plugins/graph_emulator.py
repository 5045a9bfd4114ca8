"""A running Graph API emulator on a free 127.0.0.1 port, and Send API client settings aimed at it.

``graph_emulator`` starts the emulator with three known accounts (one per flavour); override the
``graph_emulator_config`` fixture in a test module, or call ``start_graph_emulator(config)``, for
another setup. ``emulator.state`` is the emulator's live state, for assertions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from consumers.send_api.model import AccountConfig, Flavour
from consumers.send_api.settings import SendApiSettings
from igw.config import Secret
from igw_tools.graph_conversations import ConversationsConfig, ConversationsState
from igw_tools.graph_emulator import (
    EmulatorAccessLogger,
    EmulatorConfig,
    EmulatorState,
    InjectedFailure,
    create_emulator_app,
)

IG_ACCOUNT = AccountConfig("17841400000000001", Flavour.IG_IG, Secret("ig-user-token-AAAA-0001"))
IGFB_ACCOUNT = AccountConfig(
    "100000000000002", Flavour.IG_FB, Secret("page-token-igfb-BBBB-0002"), Secret("app-secret-igfb-0002")
)
MESSENGER_ACCOUNT = AccountConfig(
    "100000000000003", Flavour.MESSENGER, Secret("page-token-msgr-CCCC-0003"), Secret("app-secret-msgr-0003")
)
TEST_ACCOUNTS = (IG_ACCOUNT, IGFB_ACCOUNT, MESSENGER_ACCOUNT)


@dataclass
class RunningEmulator:
    base_url: str
    config: EmulatorConfig
    state: EmulatorState
    # The read side (igw_tools/graph_conversations.py): conversations, subscriptions, read calls.
    conversations: ConversationsState = dataclasses.field(default_factory=ConversationsState)

    def open_window(self, account_id: str, user_id: str, *, age_seconds: float = 0.0) -> None:
        """Tell the emulator ``user_id`` wrote to ``account_id`` ``age_seconds`` ago."""
        self.state.record_inbound(account_id, user_id, (time.time() - age_seconds) * 1000.0)

    def fail_next(self, count: int = 1, **fields: Any) -> None:
        self.state.inject(InjectedFailure(count=count, **fields))

    def client_settings(self, **overrides: Any) -> SendApiSettings:
        """Client settings with both base URLs on the emulator and quick retries."""
        settings = SendApiSettings(
            accounts=self.config.accounts,
            graph_base_url=self.base_url,
            instagram_base_url=self.base_url,
            timeout_seconds=2.0,
            max_attempts=4,
            max_retry_seconds=10.0,
            backoff_base_seconds=0.01,
            backoff_max_seconds=0.05,
        )
        return dataclasses.replace(settings, **overrides)


@pytest.fixture
def graph_emulator_config() -> EmulatorConfig:
    return EmulatorConfig(accounts=TEST_ACCOUNTS)


StartEmulator = Callable[..., Awaitable[RunningEmulator]]


@pytest.fixture
async def start_graph_emulator(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> StartEmulator:
    """Start an emulator with a given config; pytest-aiohttp stops it after the test."""

    async def start(config: EmulatorConfig, conversations: ConversationsConfig | None = None) -> RunningEmulator:
        state = EmulatorState()
        read_side = ConversationsState()
        app = create_emulator_app(config, state=state, conversations=conversations, conversations_state=read_side)
        server = await aiohttp_server(app, host="127.0.0.1", access_log_class=EmulatorAccessLogger)
        base_url = str(server.make_url("")).rstrip("/")
        return RunningEmulator(base_url=base_url, config=config, state=state, conversations=read_side)

    return start


@pytest.fixture
async def graph_emulator(start_graph_emulator: StartEmulator, graph_emulator_config: EmulatorConfig) -> RunningEmulator:
    return await start_graph_emulator(graph_emulator_config)
