"""The recorded Meta bodies in tests/payloads/ are well formed, escaped as Meta escapes, and match EXPECTED.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from igw.schemas import load_envelope_schema
from tests.plugins.payloads import PAYLOAD_DIR, payload_names, read_expected, read_payload

NAMES = payload_names()
ITEM_ARRAYS = ("messaging", "standby", "changes")


def meta_encode(document: Any) -> bytes:
    """Compact JSON with non-ASCII as \\uXXXX (surrogate pairs beyond the BMP) and '/' as '\\/'."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def items_of(body: dict[str, Any]) -> list[tuple[str, bool, dict[str, Any]]]:
    """(account_id, standby, item) for every item of a body, in the order Meta lists them."""
    found = []
    for entry in body["entry"]:
        for key in ITEM_ARRAYS:
            found.extend((entry["id"], key == "standby", item) for item in entry.get(key, []))
        if "field" in entry:
            found.append((entry["id"], False, {"field": entry["field"], "value": entry["value"]}))
    return found


def has_non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, dict):
        return any(has_non_ascii(k) or has_non_ascii(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_non_ascii(v) for v in value)
    return False


def test_payload_directory_is_populated() -> None:
    """There is a fixture for each of the 44 Meta events the brief lists."""
    assert len(NAMES) == 44
    assert (PAYLOAD_DIR / "EXPECTED.json").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_fixture_is_a_meta_webhook_body(name: str) -> None:
    """Each fixture parses as JSON with an instagram/page object and a non-empty entry list."""
    body = json.loads(read_payload(name))
    assert body["object"] in {"instagram", "page"}
    assert name.startswith("instagram_" if body["object"] == "instagram" else "page_")
    assert isinstance(body["entry"], list)
    assert body["entry"]
    assert items_of(body)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_bytes_are_in_metas_escaped_form(name: str) -> None:
    """The raw bytes are ASCII with \\uXXXX and \\/ escapes: encoding the parsed body as Meta does gives them back."""
    raw = read_payload(name)
    assert raw.isascii()
    assert b"/" not in raw.replace(b"\\/", b"")
    assert meta_encode(json.loads(raw)) == raw


def test_non_ascii_fixtures_carry_unicode_escapes() -> None:
    """Enough fixtures hold non-ASCII text (emoji included) that signature tests exercise the escaped form."""
    with_unicode = [name for name in NAMES if has_non_ascii(json.loads(read_payload(name)))]
    assert len(with_unicode) >= 15
    for name in with_unicode:
        assert b"\\u" in read_payload(name), name
    astral = [name for name in NAMES if b"\\ud83" in read_payload(name)]
    assert len(astral) >= 5


def test_expected_names_exactly_the_fixture_files() -> None:
    """Every EXPECTED.json entry has a file and every file has an EXPECTED.json entry."""
    assert sorted(read_expected()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_expected_matches_the_fixture_items(name: str) -> None:
    """EXPECTED.json lists one envelope per item, with the item's account, standby flag, platform and user."""
    body = json.loads(read_payload(name))
    expected = read_expected()[name]
    items = items_of(body)
    assert len(expected) == len(items)
    platform = "instagram" if body["object"] == "instagram" else "messenger"
    for want, (account_id, standby, item) in zip(expected, items, strict=True):
        assert want["account_id"] == account_id
        assert want["standby"] is standby
        assert want["platform"] == platform
        assert isinstance(want["timestamp"], int)
        assert want["timestamp"] > 10**12  # ms, also for changes whose entry.time is in seconds
        if want["type"] == "change":
            assert want["user_id"] == item["value"].get("from", {}).get("id")
        elif item.get("message", {}).get("is_echo"):
            assert want["user_id"] == item["recipient"]["id"]
        else:
            assert want["user_id"] == item.get("sender", {}).get("id")


def test_expected_covers_every_envelope_type() -> None:
    """Together the fixtures exercise every type the envelope schema allows, and no other."""
    schema_types = set(load_envelope_schema()["properties"]["type"]["enum"])
    expected_types = {item["type"] for items in read_expected().values() for item in items}
    assert expected_types == schema_types
