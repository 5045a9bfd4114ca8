"""normalize_document's shortcut for one entry with one messaging item gives what the general loop gives, and
every envelope either path builds holds to envelope-v1.json."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from bench import payloads as bench_payloads
from igw import normalize as normalize_module
from igw.envelope import COMPUTED_FIELDS
from igw.normalize import Normalized, normalize, normalize_document
from igw.schemas import load_envelope_schema
from tests.plugins.payloads import payload_names, read_payload
from tests.test_normalize import json_values

RECEIVED_AT = 1_764_100_000_000
PLATFORMS = {"instagram": "instagram", "page": "messenger"}


def general(document: dict[str, Any], received_at: int) -> Normalized:
    """The general loop, called directly: what the shortcut must equal."""
    return normalize_module._normalize_entries(PLATFORMS[document["object"]], document["entry"], received_at)


def as_bytes(result: Normalized) -> tuple[Any, ...]:
    """Everything the caller can see of a result; repr keeps key order and types, and works where a
    timestamp beyond 64 bits makes an envelope unserializable (both paths equally)."""
    events = [(*event[:7], type(event.topic), repr(event.envelope)) for event in result.events]
    return events, result.dead_letter


# Parties, ids and timestamps from small pools, so the echo, same-as-account and seconds cases come up often.
ids = st.sampled_from(["acc", "u1", "", "0"]) | st.integers(0, 2**64 - 1) | json_values
party = st.fixed_dictionaries({"id": ids}) | json_values
timestamps = st.integers(0, 2**63) | st.sampled_from([0, 1_764_000_000, 1_764_000_000_123]) | json_values
message = st.fixed_dictionaries(
    {},
    optional={
        "mid": st.sampled_from(["m1", ""]) | json_values,
        "text": json_values,
        "is_echo": json_values,
        "is_deleted": json_values,
        "attachments": st.lists(st.fixed_dictionaries({"type": json_values, "payload": json_values}), max_size=2)
        | json_values,
        "quick_reply": st.fixed_dictionaries({"payload": json_values}) | json_values,
    },
)
item = st.fixed_dictionaries(
    {},
    optional={
        "sender": party,
        "recipient": party,
        "timestamp": timestamps,
        "message": message | json_values,
        "postback": st.fixed_dictionaries({"mid": json_values, "payload": json_values}) | json_values,
        "reaction": json_values,
        "read": json_values,
    },
)
one_item_body = st.fixed_dictionaries(
    {
        "object": st.sampled_from(["instagram", "page"]),
        "entry": st.lists(
            st.fixed_dictionaries(
                {"id": ids, "time": timestamps, "messaging": st.lists(item | json_values, min_size=1, max_size=2)},
                optional={"standby": st.lists(item, max_size=1), "field": json_values, "value": json_values},
            ),
            min_size=1,
            max_size=2,
        ),
    }
)


@settings(max_examples=500, deadline=None)
@given(one_item_body, st.integers(0, 2**45))
# Found by CI: the shortcut took any integer past the seconds range as milliseconds, even past 64 bits.
@example({"object": "instagram", "entry": [{"id": "acc", "time": 2**63, "messaging": [{}]}]}, 0)
@example({"object": "page", "entry": [{"id": "acc", "time": 0, "messaging": [{"timestamp": 2**64 - 1}]}]}, 7)
@example({"object": "page", "entry": [{"id": "acc", "time": -float("inf"), "messaging": [{"timestamp": 1.5}]}]}, 7)
def test_shortcut_equals_general_loop(document: dict[str, Any], received_at: int) -> None:
    """For bodies shaped like the common delivery and near misses, both paths give identical events."""
    assert as_bytes(normalize_document(document, received_at)) == as_bytes(general(document, received_at))


@pytest.mark.parametrize("name", payload_names())
def test_recorded_payloads_give_the_same_either_way(name: str) -> None:
    """Every recorded Meta body normalizes the same through the shortcut and the general loop."""
    document = orjson.loads(read_payload(name))
    assert as_bytes(normalize_document(document, RECEIVED_AT)) == as_bytes(general(document, RECEIVED_AT))


def test_a_single_dm_takes_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's one-message body does not reach the general loop (else the shortcut is dead code)."""

    def fail(*args: object) -> Normalized:
        raise AssertionError("general loop used")

    monkeypatch.setattr(normalize_module, "_normalize_entries", fail)
    [signed] = bench_payloads.one_message("secret")
    assert len(normalize(signed.body, RECEIVED_AT).events) == 1


# The fields the gateway itself computes. Type objects and `raw` carry what Meta sent, as it sent it.
SCHEMA = load_envelope_schema()
COMPUTED = COMPUTED_FIELDS
FIELD_VALIDATORS = {name: Draft202012Validator(SCHEMA["properties"][name]) for name in COMPUTED}


@settings(max_examples=300, deadline=None)
@given(one_item_body, st.integers(1, 2**45))
@example({"object": "instagram", "entry": [{"id": "acc", "time": -5, "messaging": [{"timestamp": -1.5}]}]}, 7)
@example({"object": "page", "entry": [{"id": "acc", "time": 2**64 - 1, "messaging": [{"timestamp": -(2**63)}]}]}, 7)
def test_computed_fields_hold_to_the_schema(document: dict[str, Any], received_at: int) -> None:
    """Whatever shape a body has, the envelope fields the gateway computes (ids, parties, times)
    validate against envelope-v1.json."""
    for event in normalize_document(document, received_at).events:
        envelope = event.envelope
        assert set(SCHEMA["required"]) <= envelope.keys()
        for name, validator in FIELD_VALIDATORS.items():
            if name in envelope:
                errors = [e.message for e in validator.iter_errors(envelope[name])]
                assert not errors, (name, envelope[name], errors)
