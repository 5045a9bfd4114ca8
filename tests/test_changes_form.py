"""One event, one id: a messaging item delivered in `changes` form (field/value), with numbers written as
strings or ids as numbers, or under a legacy key, is the same envelope as in `messaging[]`; and
``event_id``/``normalize_item`` give what a webhook delivery gives."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw.normalize import MESSAGING_FIELDS, Event, event_id, normalize, normalize_document, normalize_item
from tests.plugins.payloads import payload_names, read_payload
from tests.test_normalize_fast_path import item as item_strategy

RECEIVED_AT = 1_764_100_000_000
PLATFORMS = {"instagram": "instagram", "page": "messenger"}
# The webhook field Meta names for each type (Messenger's spelling where Instagram's differs).
FIELD_OF = {
    "message": "messages",
    "message_deleted": "messages",
    "message_echo": "message_echoes",
    "message_edit": "message_edits",
    "postback": "messaging_postbacks",
    "reaction": "message_reactions",
    "read": "message_reads",
    "delivery": "message_deliveries",
    "referral": "messaging_referrals",
    "optin": "messaging_optins",
    "handover": "messaging_handovers",
    "policy_enforcement": "messaging_policy_enforcement",
    "account_linking": "messaging_account_linking",
    "messaging_feedback": "messaging_feedback",
    "response_feedback": "response_feedback",
    "order": "send_cart",
    "unknown": "messages",
}


def one(document: dict[str, Any]) -> Event:
    result = normalize_document(document, RECEIVED_AT)
    assert result.dead_letter is None
    [event] = result.events
    return event


def recorded_items() -> list[tuple[str, str, str, bool, dict[str, Any]]]:
    """(file, object, account, standby, item) for every messaging[]/standby[] item of the recorded bodies."""
    found: list[tuple[str, str, str, bool, dict[str, Any]]] = []
    for name in payload_names():
        body = json.loads(read_payload(name))
        for entry in body["entry"]:
            for key in ("messaging", "standby"):
                found.extend((name, body["object"], entry["id"], key == "standby", i) for i in entry.get(key, []))
    return found


def as_meta_sometimes_writes_it(item: dict[str, Any]) -> dict[str, Any]:
    """The item as the `changes` examples write it: the timestamp as a numeric string (in seconds where that
    loses nothing) and numeric party ids as numbers."""
    item = copy.deepcopy(item)
    timestamp = item.get("timestamp")
    if type(timestamp) is int:
        item["timestamp"] = str(timestamp // 1000) if timestamp % 1000 == 0 else str(timestamp)
    for key in ("sender", "recipient"):
        party = item.get(key)
        if isinstance(party, dict) and isinstance(party.get("id"), str) and party["id"].isdigit():
            party["id"] = int(party["id"])
    return item


ITEMS = recorded_items()


@pytest.mark.parametrize(
    ("name", "obj", "account", "standby", "item"), ITEMS, ids=[f"{i[0]}-{n}" for n, i in enumerate(ITEMS)]
)
def test_changes_form_is_the_same_event(name: str, obj: str, account: str, standby: bool, item: dict[str, Any]) -> None:
    """Every recorded messaging item, delivered again as a change of its field (numbers as strings, ids as
    numbers), gives the same id, type, topic, key, parties and time."""
    plain = one(
        {
            "object": obj,
            "entry": [{"id": account, "time": 1764000000000, "standby" if standby else "messaging": [item]}],
        }
    )
    field = "standby" if standby else FIELD_OF[plain.type]
    change = {"field": field, "value": as_meta_sometimes_writes_it(item)}
    changed = one({"object": obj, "entry": [{"id": account, "time": 1764000000, "changes": [change]}]})
    assert (changed.id, changed.type, changed.topic, changed.key) == (plain.id, plain.type, plain.topic, plain.key)
    for field_name in ("user_id", "sender_id", "recipient_id", "conversation_id", "timestamp", "standby", plain.type):
        if field_name in plain.envelope:
            assert changed.envelope.get(field_name) == plain.envelope[field_name], field_name


@settings(max_examples=200, deadline=None)
@given(item_strategy, st.sampled_from(sorted(MESSAGING_FIELDS - {"standby"})), st.sampled_from(["instagram", "page"]))
def test_any_item_is_the_same_envelope_in_either_form(item: dict[str, Any], field: str, obj: str) -> None:
    """Whatever an item holds, in `changes` form under any messaging field it is the envelope `messaging[]` gives."""
    entry = {"id": "acc", "time": 1764000000000}
    plain = normalize(orjson.dumps({"object": obj, "entry": [{**entry, "messaging": [item]}]}), RECEIVED_AT)
    changed = normalize(
        orjson.dumps({"object": obj, "entry": [{**entry, "changes": [{"field": field, "value": item}]}]}), RECEIVED_AT
    )
    assert [(e[:7], e.envelope) for e in changed.events] == [(e[:7], e.envelope) for e in plain.events]


def test_bare_field_value_form_too() -> None:
    """A messaging field given directly on the entry (the bare form) is the same event as well."""
    item = {
        "sender": {"id": "u1"},
        "recipient": {"id": "acc"},
        "timestamp": 1764000000123,
        "message": {"mid": "m1", "text": "hi"},
    }
    plain = one({"object": "instagram", "entry": [{"id": "acc", "messaging": [item]}]})
    bare = one({"object": "instagram", "entry": [{"id": "acc", "field": "messages", "value": item}]})
    assert bare.envelope == plain.envelope


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("comments", {"from": {"id": "u1"}, "sender": {"id": "u1"}, "message": {"mid": "m1"}}),
        ("mentions", {"media_id": "17918195224117851", "comment_id": "17894227972186120"}),
        ("story_insights", {"media_id": "18023345989012587", "reach": 17}),
        ("standby", "a string, as some dashboard samples give it"),
        ("messages", ["not", "an", "object"]),
    ],
)
def test_account_level_changes_stay_changes(field: str, value: Any) -> None:
    """Comments, mentions, story insights, and a messaging field whose value is no item stay `change` events."""
    event = one(
        {
            "object": "instagram",
            "entry": [{"id": "acc", "time": 1764000000, "changes": [{"field": field, "value": value}]}],
        }
    )
    assert event.type == "change"
    assert event.envelope["change"] == {"field": field, "value": value}


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("1527459824", 1_527_459_824_000),  # seconds, as the dashboard test writes it
        ("1527459824123", 1_527_459_824_123),  # ms
        (1527459824, 1_527_459_824_000),
        ("0", None),
        ("", None),
        (" 1527459824", None),
        ("1527459824.5", None),
        ("-1527459824", None),
        ("1e12", None),
        ("\u0661\u0665\u0662\u0667", None),  # Arabic-Indic digits: str.isdigit() says yes, Meta never sends them
        ("9" * 20, None),  # past 64 bits
        ("9" * 5000, None),  # longer than int() accepts by default
    ],
)
def test_numeric_string_times_read_as_meta_means_them(stamp: Any, expected: int | None) -> None:
    """A timestamp given as a string of digits is seconds or ms as a number would be; anything else is no time."""
    item = {
        "sender": {"id": "u1"},
        "recipient": {"id": "acc"},
        "timestamp": stamp,
        "reaction": {"mid": "m1", "action": "react"},
    }
    event = one({"object": "instagram", "entry": [{"id": "acc", "time": "1764000000", "messaging": [item]}]})
    assert event.timestamp == (expected or 1_764_000_000_000)  # else the entry's time, itself a string


def test_ids_are_strings_in_the_envelope() -> None:
    """Party ids, app ids and the ids an attachment carries are strings, whatever Meta sent; a message-level
    sticker_id names the sticker of its attachments."""
    item = {
        "sender": {"id": 106538292817364},
        "recipient": {"id": 6542013987452103},
        "timestamp": 1458692752478,
        "message": {
            "mid": "mid.1",
            "is_echo": True,
            "app_id": 1517776481860111,
            "sticker_id": 369239263222822,
            "attachments": [
                {"type": "image", "payload": {"url": "https://x/y.png"}},
                {"type": "post", "payload": {"url": "https://x/p", "id": 1038264417712553}},
                {"type": "ig_reel", "payload": {"url": "https://x/r", "reel_video_id": 18311298471052938}},
            ],
        },
    }
    event = one({"object": "page", "entry": [{"id": 106538292817364, "messaging": [item]}]})
    envelope = event.envelope
    assert (envelope["account_id"], envelope["sender_id"], envelope["user_id"]) == (
        "106538292817364",
        "106538292817364",
        "6542013987452103",
    )
    message = envelope["message"]
    assert message["app_id"] == "1517776481860111"
    assert [a.get("sticker_id") for a in message["attachments"]] == ["369239263222822"] * 3
    assert message["attachments"][1]["id"] == "1038264417712553"
    assert message["attachments"][2]["reel_video_id"] == "18311298471052938"


def test_legacy_policy_enforcement_key_is_the_same_event() -> None:
    """`policy-enforcement` (Meta's older spelling) is a policy_enforcement event, with the current spelling's id."""
    base = {"recipient": {"id": "acc"}, "timestamp": 1458692752478}
    value = {"action": "block", "reason": "spam"}
    legacy = one({"object": "page", "entry": [{"id": "acc", "messaging": [{**base, "policy-enforcement": value}]}]})
    current = one({"object": "page", "entry": [{"id": "acc", "messaging": [{**base, "policy_enforcement": value}]}]})
    assert legacy.type == "policy_enforcement"
    assert legacy.envelope["policy_enforcement"] == value
    assert legacy.id == current.id


def test_event_id_is_the_id_of_every_recorded_event() -> None:
    """event_id(platform, account, type, item) gives each recorded event's id, from the item as Meta sent it
    (in any form); for account-level changes the item is the field/value pair."""
    checked = 0
    for name in payload_names():
        body = json.loads(read_payload(name))
        events = iter(normalize(read_payload(name), RECEIVED_AT).events)
        for entry in body["entry"]:
            items = entry.get("messaging", []) + entry.get("standby", []) + entry.get("changes", [])
            if "field" in entry:
                items.append({"field": entry["field"], "value": entry["value"]})
            for item in items:
                event = next(events)
                if event.type != "change" and "field" in item:
                    item = item["value"]  # a messaging item in changes form
                account = event.envelope["account_id"]
                assert event_id(event.envelope["platform"], account, event.type, item) == event.id, name
                checked += 1
    assert checked > 100


def test_event_id_for_a_message_rebuilt_from_the_conversations_api() -> None:
    """A message rebuilt from another source with only its mid gets the webhook's id (the id names the message)."""
    [event] = normalize(read_payload("instagram_message_text.json"), RECEIVED_AT).events
    mid = event.envelope["message"]["mid"]
    assert event_id("instagram", event.envelope["account_id"], "message", {"message": {"mid": mid}}) == event.id


TIMED = [i for i in ITEMS if "timestamp" in i[4]]  # an item without its own time takes its entry's


@pytest.mark.parametrize(
    ("name", "obj", "account", "standby", "item"), TIMED, ids=[f"{i[0]}-{n}" for n, i in enumerate(TIMED)]
)
def test_normalize_item_is_what_the_webhook_publishes(
    name: str, obj: str, account: str, standby: bool, item: dict[str, Any]
) -> None:
    """normalize_item gives the webhook's event for an item that carries its own time."""
    from_webhook = one({"object": obj, "entry": [{"id": account, "standby" if standby else "messaging": [item]}]})
    rebuilt = normalize_item(PLATFORMS[obj], account, item, RECEIVED_AT, standby=standby)
    assert rebuilt == from_webhook
