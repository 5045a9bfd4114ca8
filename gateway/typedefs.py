"""Typed application keys, declared once."""

from __future__ import annotations

from aiohttp import web

from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from gateway.state import GatewayState

settings_key = web.AppKey("settings", GatewaySettings)
publisher_key = web.AppKey("publisher", Publisher)
state_key = web.AppKey("state", GatewayState)
