"""JSON Schemas of igw's published records, shipped as package data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

ENVELOPE_V1 = "envelope-v1.json"


def load_envelope_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the event envelope v1 (docs/events.md)."""
    text = resources.files(__name__).joinpath(ENVELOPE_V1).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
