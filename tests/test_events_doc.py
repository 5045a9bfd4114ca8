"""docs/events.md shows a valid envelope for every type the normalizer emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from igw.schemas import load_envelope_schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
TYPES = {
    "message", "message_echo", "message_deleted", "message_edit", "postback", "reaction", "read", "delivery",
    "referral", "optin", "handover", "policy_enforcement", "response_feedback", "account_linking",
    "messaging_feedback", "order", "change", "unknown",
}  # fmt: skip


def test_every_type_has_a_valid_example() -> None:
    """Each type has an example under 'Examples per type' that validates against envelope-v1.json."""
    text = DOC.read_text()
    section = text.split("<!-- examples:start -->", 1)[1].split("<!-- examples:end -->", 1)[0]
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]
    validator = jsonschema.Draft202012Validator(load_envelope_schema())
    for example in examples:
        validator.validate(example)
    assert {e["type"] for e in examples} == TYPES
