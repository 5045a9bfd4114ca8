"""igw/schemas/envelope-v1.json states the envelope v1 contract of docs/events.md."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from igw.normalize import normalize
from igw.schemas import load_envelope_schema
from tests.plugins.payloads import payload_names, read_payload

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events.md"
SCHEMA = load_envelope_schema()
VALIDATOR = Draft202012Validator(SCHEMA)
TYPES: list[str] = SCHEMA["properties"]["type"]["enum"]

# The smallest type object each type needs (docs/events.md, "Types").
TYPE_OBJECTS: dict[str, tuple[str, dict[str, Any]]] = {
    "message": ("message", {"mid": "aWdfZAG1faXRlbQ"}),
    "message_echo": ("message", {"mid": "aWdfZAG1faXRlbQ", "app_id": "1209384756102938"}),
    "message_deleted": ("message", {"mid": "aWdfZAG1faXRlbQ"}),
    "message_edit": ("message_edit", {"mid": "aWdfZAG1faXRlbQ", "text": "edited", "num_edit": 1}),
    "postback": ("postback", {"mid": "m_1", "title": "Book", "payload": "BOOK", "referral": None}),
    "reaction": ("reaction", {"mid": "aWdf", "action": "react", "reaction": "love", "emoji": "\u2764\ufe0f"}),
    "read": ("read", {"mid": None, "watermark": 1764000000000}),
    "delivery": ("delivery", {"mids": ["m_1"], "watermark": 1764000000000}),
    "referral": ("referral", {"ref": "bio", "source": "SHORTLINK", "type": "OPEN_THREAD"}),
    "optin": ("optin", {"type": "notification_messages", "payload": "deals"}),
    "handover": ("handover", {"kind": "pass_thread_control", "new_owner_app_id": "1209384756102938"}),
    "policy_enforcement": ("policy_enforcement", {"action": "block", "reason": "spam"}),
    "response_feedback": ("response_feedback", {"feedback": "Good response", "mid": "m_1"}),
    "account_linking": ("account_linking", {"status": "unlinked"}),
    "messaging_feedback": ("messaging_feedback", {"feedback_screens": []}),
    "order": ("order", {"products": [], "note": ""}),
    "change": ("change", {"field": "mentions", "value": {"media_id": "1791", "comment_id": "1789"}}),
    "unknown": ("unknown", {"keys": ["recipient", "sender", "thread_insight_preview", "timestamp"]}),
}


def envelope(type_: str) -> dict[str, Any]:
    """A valid envelope of the given type, for one user's conversation."""
    key, type_object = TYPE_OBJECTS[type_]
    raw: dict[str, Any] = {"sender": {"id": "6284917503826471"}, "timestamp": 1764000000000}
    if type_ == "message_echo":
        raw["message"] = {"mid": "aWdfZAG1faXRlbQ", "is_echo": True}
    return {
        "v": 1,
        "id": "6d1f0c3c1c5f4f1f8c55b2f0a1a2b3c4",
        "type": type_,
        "platform": "instagram",
        "account_id": "17841405822304914",
        "user_id": "6284917503826471",
        "conversation_id": "instagram:17841405822304914:6284917503826471",
        "timestamp": 1764000000000,
        "received_at": 1764000000123,
        "standby": False,
        key: type_object,
        "raw": raw,
    }


def is_valid(document: dict[str, Any]) -> bool:
    return VALIDATOR.is_valid(document)


def test_schema_is_valid_draft_2020_12() -> None:
    """The schema itself is a valid draft 2020-12 schema."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_type_enum_is_the_documented_list() -> None:
    """The type enum holds exactly the types docs/events.md lists."""
    section = DOCS.read_text("utf-8").split("## Types", 1)[1].split("## Kafka", 1)[0]
    documented: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `") and not line.startswith("| `type` |"):  # skip the header row
            documented.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    assert set(TYPES) == documented


def test_documented_example_validates() -> None:
    """The complete inbound Instagram DM example in docs/events.md is a valid envelope."""
    block = DOCS.read_text("utf-8").split("```json", 1)[1].split("```", 1)[0]
    assert is_valid(json.loads(block))


@pytest.mark.parametrize("type_", TYPES)
def test_each_type_validates_with_its_type_object(type_: str) -> None:
    """An envelope of each type with its type object is valid."""
    assert is_valid(envelope(type_))


@pytest.mark.parametrize("type_", TYPES)
def test_each_type_requires_its_type_object(type_: str) -> None:
    """Without its type object an envelope of that type is invalid."""
    document = envelope(type_)
    del document[TYPE_OBJECTS[type_][0]]
    assert not is_valid(document)


@pytest.mark.parametrize(
    "field", ["v", "id", "type", "platform", "account_id", "timestamp", "received_at", "standby", "raw"]
)
def test_required_top_level_fields(field: str) -> None:
    """Each required top-level field is required."""
    document = envelope("message")
    del document[field]
    assert not is_valid(document)


@pytest.mark.parametrize(
    "bad_id",
    ["6D1F0C3C1C5F4F1F8C55B2F0A1A2B3C4", "6d1f0c3c1c5f4f1f8c55b2f0a1a2b3c", "6d1f0c3c-1c5f-4f1f-8c55-b2f0a1a2b3c4"],
)
def test_id_is_32_lowercase_hex(bad_id: str) -> None:
    """The id must be 32 lowercase hex characters."""
    document = envelope("message")
    document["id"] = bad_id
    assert not is_valid(document)


def test_unknown_top_level_fields_are_allowed() -> None:
    """A field added later does not invalidate a v1 envelope."""
    document = envelope("message")
    document["trace_id"] = "abc"
    assert is_valid(document)


def test_unknown_type_is_rejected() -> None:
    """A type outside the documented list is invalid."""
    document = envelope("message")
    document["type"] = "typing"
    assert not is_valid(document)


def test_message_requires_mid() -> None:
    """A message type object without mid is invalid."""
    document = envelope("message")
    del document["message"]["mid"]
    assert not is_valid(document)


def test_echo_raw_carries_is_echo() -> None:
    """A message_echo whose raw message lacks is_echo: true is invalid."""
    document = envelope("message_echo")
    document["raw"]["message"]["is_echo"] = False
    assert not is_valid(document)


def test_user_id_needs_conversation_id() -> None:
    """An envelope with a user_id must carry its conversation_id."""
    document = envelope("message")
    del document["conversation_id"]
    assert not is_valid(document)


def test_account_level_event_needs_no_user() -> None:
    """An account-level event (policy_enforcement) is valid without user_id and conversation_id."""
    document = envelope("policy_enforcement")
    del document["user_id"], document["conversation_id"]
    assert is_valid(document)


def test_loader_returns_a_fresh_copy() -> None:
    """Changing the loaded schema does not change what the next caller gets."""
    first = load_envelope_schema()
    pristine = copy.deepcopy(first)
    first["properties"].clear()
    assert load_envelope_schema() == pristine


@pytest.mark.parametrize("name", payload_names())
def test_normalizer_output_validates(name: str) -> None:
    """Every envelope the normalizer makes from the recorded Meta bodies is valid against the schema."""
    normalized = normalize(read_payload(name), received_at=1764100000000)
    assert normalized.dead_letter is None
    assert normalized.events
    for event in normalized.events:
        errors = [f"{error.json_path}: {error.message}" for error in VALIDATOR.iter_errors(event.envelope)]
        assert errors == [], name
