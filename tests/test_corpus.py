"""Every body of tests/payloads/ becomes the envelopes its MANIFEST.json entry expects.

The expectations are written from Meta's documentation (who the user is, which time is the event's,
seconds or ms, which key names the type), not copied from igw's output; see tests/plugins/payloads.py.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from typing import Any

import pytest

from igw.normalize import Event, normalize
from tests.plugins.payloads import payload_names, read_manifest, read_payload

MANIFEST = read_manifest()
BODIES: dict[str, Any] = MANIFEST["bodies"]
RECEIVED_AT: int = MANIFEST["received_at"]


def mismatches(want: Any, got: Any, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: objects compare on ``want``'s keys (a missing key reads as null),
    lists item by item and in full length, scalars by value and type."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected an object, got {got!r}"]
        return [m for key, value in want.items() for m in mismatches(value, got.get(key), f"{path}.{key}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: expected {len(want)} items, got {got!r}"]
        return [m for i, (w, g) in enumerate(zip(want, got, strict=True)) for m in mismatches(w, g, f"{path}[{i}]")]
    if want != got or type(want) is not type(got):
        return [f"{path}: expected {want!r}, got {got!r}"]
    return []


def events_of(name: str) -> list[Event]:
    result = normalize(read_payload(name), RECEIVED_AT)
    assert result.dead_letter is None
    return result.events


@pytest.mark.parametrize("name", payload_names())
def test_body_becomes_the_expected_envelopes(name: str) -> None:
    """Type, topic, parties, account, time and the type object's fields are what Meta's semantics give."""
    events = events_of(name)
    expected = BODIES[name]["events"]
    assert len(events) == len(expected)
    for index, (want, event) in enumerate(zip(expected, events, strict=True)):
        envelope = event.envelope
        assert not mismatches(want, {**envelope, "topic": event.topic.value}, f"[{index}]")
        assert event.key == envelope.get("conversation_id") or envelope["account_id"]
        assert event.type == envelope["type"]
        assert event.timestamp == envelope["timestamp"]


def test_bodies_declared_the_same_event_share_its_id() -> None:
    """Two deliveries of one event (messaging[] and changes[] form, old and new attachment form, or the same
    example in two sources) get one event id, type, topic and key."""
    pairs = [(name, entry["same_event_as"]) for name, entry in BODIES.items() if "same_event_as" in entry]
    assert any("changes form" in " ".join(BODIES[a]["shapes"] + BODIES[b]["shapes"]) for a, b in pairs)
    for name, other in pairs:
        [event], [twin] = events_of(name), events_of(other)
        assert (event.id, event.type, event.topic, event.key) == (twin.id, twin.type, twin.topic, twin.key)


def test_only_one_message_or_declared_twins_share_an_id() -> None:
    """Ids differ between recorded events, except for the same message (type and mid: the docs reuse mids)
    or bodies the manifest declares the same event."""
    seen: dict[str, list[tuple[str, Event]]] = defaultdict(list)
    for name in payload_names():
        for event in events_of(name):
            seen[event.id].append((name, event))
    twins = {frozenset((name, entry["same_event_as"])) for name, entry in BODIES.items() if "same_event_as" in entry}
    for group in seen.values():
        if len(group) == 1:
            continue
        names = {name for name, _ in group}
        named_by = {
            (e.type, (e.envelope.get("message") or e.envelope.get("postback") or {}).get("mid")) for _, e in group
        }
        declared = len(names) == 2 and frozenset(names) in twins
        assert declared or (len(named_by) == 1 and None not in next(iter(named_by))), names


def test_recorded_body_is_byte_for_byte_what_meta_signed() -> None:
    """messenger4j's recorded body still carries the signature Meta computed over it (sha1, the test's secret):
    the corpus keeps bodies byte for byte where a source recorded them."""
    body = read_payload("page_m4j_signed_text.json")
    signature = hmac.new(b"60efff025951cddde78c8d03de52cc90", body, hashlib.sha1).hexdigest()
    assert signature == "3daa41999293ff66c3eb313e04bcf77861bb0276"
