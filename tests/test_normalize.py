"""The normalizer turns every recorded Meta payload into the envelopes docs/events.md promises."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igw.normalize import Topic, normalize, normalize_document
from tests.plugins.payloads import payload_names, read_expected, read_payload

RECEIVED_AT = 1_764_100_000_000
EXPECTED = read_expected()


@pytest.mark.parametrize("name", payload_names())
def test_recorded_payload_becomes_expected_envelopes(name: str) -> None:
    """Type, standby, parties, account, time and platform of each item match EXPECTED.json."""
    result = normalize(read_payload(name), RECEIVED_AT)
    assert result.dead_letter is None
    got = [
        {
            "type": e.envelope["type"],
            "standby": e.envelope["standby"],
            "user_id": e.envelope.get("user_id"),
            "account_id": e.envelope["account_id"],
            "timestamp": e.envelope["timestamp"],
            "platform": e.envelope["platform"],
        }
        for e in result.events
    ]
    assert got == EXPECTED[name]
    for event in result.events:
        env = event.envelope
        assert env["received_at"] == RECEIVED_AT
        assert env["v"] == 1
        assert event.key == env.get("conversation_id", env["account_id"])
        if "user_id" in env:
            assert env["conversation_id"] == f"{env['platform']}:{env['account_id']}:{env['user_id']}"


@pytest.mark.parametrize("name", payload_names())
def test_ids_survive_reencoding(name: str) -> None:
    """The same body with raw unicode, no \\/ escapes and reversed key order gives the same ids."""
    original = normalize(read_payload(name), RECEIVED_AT)

    def reverse_keys(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reverse_keys(value[k]) for k in reversed(list(value))}
        if isinstance(value, list):
            return [reverse_keys(v) for v in value]
        return value

    document = reverse_keys(json.loads(read_payload(name)))
    reencoded = normalize(json.dumps(document, ensure_ascii=False).encode(), RECEIVED_AT + 5000)
    assert [e.id for e in reencoded.events] == [e.id for e in original.events]


def test_message_fields() -> None:
    """A DM carries text, attachments, quick-reply payload and reply_to in its message object."""
    item = {
        "sender": {"id": "u1"},
        "recipient": {"id": "acc"},
        "timestamp": 1764000000000,
        "message": {
            "mid": "m1",
            "text": "Ja",
            "quick_reply": {"payload": "YES"},
            "reply_to": {"mid": "m0"},
            "attachments": [{"type": "image", "payload": {"url": "https://cdn.example/x.jpg"}}],
        },
    }
    [event] = normalize_document({"object": "instagram", "entry": [{"id": "acc", "messaging": [item]}]}, 1).events
    message = event.envelope["message"]
    assert message["quick_reply_payload"] == "YES"
    assert message["reply_to"] == {"mid": "m0"}
    assert message["attachments"] == [{"type": "image", "url": "https://cdn.example/x.jpg"}]
    assert event.topic is Topic.MESSAGES


def test_echo_belongs_to_the_user_conversation() -> None:
    """An echo's other party is its recipient, so it joins the user's conversation."""
    item = {
        "sender": {"id": "acc"},
        "recipient": {"id": "u1"},
        "timestamp": 1764000000000,
        "message": {"mid": "m2", "text": "Hello from the shop", "is_echo": True, "app_id": 1234},
    }
    [event] = normalize_document({"object": "page", "entry": [{"id": "acc", "messaging": [item]}]}, 1).events
    assert event.type == "message_echo"
    assert event.envelope["user_id"] == "u1"
    assert event.envelope["conversation_id"] == "messenger:acc:u1"


def test_seconds_are_converted_to_ms() -> None:
    """Meta's seconds-based entry.time becomes ms."""
    body = {"object": "instagram", "entry": [{"id": "acc", "time": 1764000000, "changes": [{"field": "mentions"}]}]}
    [event] = normalize_document(body, 1).events
    assert event.timestamp == 1764000000000


def test_reactions_to_one_message_are_distinct_events() -> None:
    """React and unreact on the same mid are two events, not one."""
    base = {"sender": {"id": "u1"}, "recipient": {"id": "acc"}}
    items = [
        {**base, "timestamp": 1, "reaction": {"mid": "m1", "action": "react", "reaction": "love", "emoji": "❤"}},
        {**base, "timestamp": 2, "reaction": {"mid": "m1", "action": "unreact"}},
    ]
    events = normalize_document({"object": "instagram", "entry": [{"id": "acc", "messaging": items}]}, 1).events
    assert len({e.id for e in events}) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
item_like = st.fixed_dictionaries(
    {},
    optional={
        "sender": st.one_of(json_values, st.fixed_dictionaries({"id": st.text(max_size=5) | st.integers(0, 2**63)})),
        "recipient": json_values,
        "timestamp": json_values,
        "message": st.one_of(
            json_values, st.fixed_dictionaries({}, optional={"mid": json_values, "text": json_values})
        ),
        "postback": json_values,
        "reaction": json_values,
        "read": json_values,
        "field": json_values,
        "value": json_values,
    },
)
body_like = st.fixed_dictionaries(
    {},
    optional={
        "object": st.sampled_from(["instagram", "page", "other"]) | json_values,
        "entry": st.lists(
            st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "id": json_values,
                        "time": json_values,
                        "messaging": st.lists(item_like | json_values, max_size=3) | json_values,
                        "standby": st.lists(item_like, max_size=2),
                        "changes": st.lists(item_like | json_values, max_size=2) | json_values,
                        "field": json_values,
                        "value": json_values,
                    },
                ),
            ),
            max_size=3,
        )
        | json_values,
    },
)


def expected_shape(document: dict[str, Any]) -> tuple[int, bool]:
    """An independent count: (events the body must yield, whether something must be dead-lettered)."""
    if document.get("object") not in ("instagram", "page"):
        return 0, True
    entries = document.get("entry")
    if not isinstance(entries, list):
        return 0, True
    count, bad = 0, False
    for entry in entries:
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        valid_id = (isinstance(entry_id, str) and entry_id) or (
            isinstance(entry_id, int) and not isinstance(entry_id, bool)
        )
        if not valid_id:
            bad = True
            continue
        for key in ("messaging", "standby", "changes"):
            items = entry.get(key)
            if items is None:
                continue
            if not isinstance(items, list):
                bad = True
                continue
            count += sum(isinstance(i, dict) for i in items)
            bad = bad or any(not isinstance(i, dict) for i in items)
        count += "field" in entry and "value" in entry
    return count, bad


@settings(max_examples=400, deadline=None)
@given(body_like)
def test_any_json_normalizes_or_dead_letters(document: dict[str, Any]) -> None:
    """Whatever JSON arrives, every readable item is an event, the rest a dead letter; nothing raises."""
    body = orjson.dumps(document)
    result = normalize(body, RECEIVED_AT)
    count, bad = expected_shape(document)
    assert len(result.events) == count
    assert (result.dead_letter is not None) == bad
    for event in result.events:
        orjson.dumps(event.envelope)  # every envelope serializes
        assert len(event.id) == 32
    again = normalize(orjson.dumps(document, option=orjson.OPT_SORT_KEYS), RECEIVED_AT)
    assert [e.id for e in again.events] == [e.id for e in result.events]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_normalize_or_dead_letter(body: bytes) -> None:
    """Arbitrary bytes never raise; what is not JSON is dead-lettered as such."""
    result = normalize(body, RECEIVED_AT)
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        assert result.dead_letter is not None
        assert result.dead_letter.reason == "not_json"
        assert result.events == []


def test_id_beyond_64_bits_is_dead_lettered() -> None:
    """An id too large for an integer (parsed as an inexact float) is not trusted: the body is dead-lettered."""
    result = normalize(b'{"object":"instagram","entry":[{"id":123456789012345678901234567890}]}', RECEIVED_AT)
    assert result.events == []
    assert result.dead_letter is not None
    assert result.dead_letter.paths == ("entry[0]",)


@pytest.mark.parametrize("stamp", [1e20, -1e20, 9.3e18, 2**63, 2**64 - 1, -5, -1.5, -(2**63)])
def test_timestamps_the_envelope_cannot_hold_fall_back_and_still_serialize(stamp: float) -> None:
    """A timestamp too large for a signed 64-bit integer (a float, or an integer orjson reads as
    unsigned) or below zero is no timestamp: the entry's time (else the receive time) stands in,
    and the envelope (whose timestamp is a non-negative 64-bit integer) and the record serialize."""
    from igw.records import build_records

    item = {"sender": {"id": "1"}, "recipient": {"id": "2"}, "timestamp": stamp, "message": {"mid": "m", "text": "x"}}
    for entry_time in (stamp, 1_700_000_000_000):
        body = orjson.dumps({"object": "instagram", "entry": [{"id": "2", "time": entry_time, "messaging": [item]}]})
        normalized = normalize(body, received_at=1_700_000_000_123)
        [event] = normalized.events
        expected = 1_700_000_000_000 if entry_time != stamp else 1_700_000_000_123
        assert event.timestamp == expected
        topics = {topic: f"t.{topic.value}" for topic in Topic}
        [record] = build_records(normalized, topics, body, 1_700_000_000_123, None)
        assert orjson.loads(record.value)["timestamp"] == expected
