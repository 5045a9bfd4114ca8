"""JSON Schema of the reply records the agent consumer publishes to ``<prefix>.replies``."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

REPLY_V1 = "reply-v1.json"


def load_reply_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a reply record (docs/agent.md, "Reply records")."""
    text = resources.files(__name__).joinpath(REPLY_V1).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
