"""The recorded Meta bodies in tests/payloads/ are well formed, escaped as Meta escapes, and listed in MANIFEST.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from igw.normalize import MESSAGING_FIELDS
from igw.schemas import load_envelope_schema
from tests.plugins.payloads import PAYLOAD_DIR, payload_names, read_expected, read_manifest, read_payload

NAMES = payload_names()
ITEM_ARRAYS = ("messaging", "standby", "changes")


def meta_encode(document: Any) -> bytes:
    """Compact JSON with non-ASCII as \\uXXXX (surrogate pairs beyond the BMP) and '/' as '\\/'."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def items_of(body: dict[str, Any]) -> list[tuple[str, bool, dict[str, Any]]]:
    """(account_id, standby, item) for every item of a body, in the order Meta lists them."""
    found: list[tuple[str, bool, dict[str, Any]]] = []
    for entry in body["entry"]:
        for key in ITEM_ARRAYS:
            found.extend((entry["id"], key == "standby", item) for item in entry.get(key, []))
        if "field" in entry:
            found.append((entry["id"], False, {"field": entry["field"], "value": entry["value"]}))
    return found


def user_of(account_id: str, item: dict[str, Any]) -> str | None:
    """The conversation's other party as Meta's pages describe it, restated from the item itself."""
    if "field" in item and item["field"] not in MESSAGING_FIELDS:
        user = item["value"].get("from", {}).get("id")  # a comment's author; the account's own is nobody
    else:
        item = item.get("value", item)  # a messaging item in `changes` form is the same item
        party = "recipient" if item.get("message", {}).get("is_echo") else "sender"
        user = item.get(party, {}).get("id")  # a sender known only by user_ref has no id
    return None if user == account_id else user


def has_non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, dict):
        return any(has_non_ascii(k) or has_non_ascii(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_non_ascii(v) for v in value)
    return False


def test_payload_directory_is_populated() -> None:
    """Most fixtures are real bodies from Meta's documentation or other projects; a few are igw's own."""
    origins = [entry["origin"] for entry in read_manifest()["bodies"].values()]
    assert origins.count("meta-docs") + origins.count("open-source") >= 60
    assert set(origins) == {"meta-docs", "open-source", "hand-made"}
    assert (PAYLOAD_DIR / "MANIFEST.json").is_file()


def test_every_sourced_body_names_its_source_and_licence() -> None:
    """Each body says where it comes from (a Meta page, or a repository, commit and path under a permissive
    licence) and what was filled in for placeholders."""
    for name, entry in read_manifest()["bodies"].items():
        assert entry["shapes"], name
        assert entry["placeholders"], name
        if entry["origin"] == "meta-docs":
            assert entry["source"].startswith("https://developers.facebook.com/"), name
        elif entry["origin"] == "open-source":
            source = entry["source"]
            assert {"repo", "commit", "path"} <= source.keys(), name
            assert len(source["commit"]) == 40, name
            assert entry["licence"].startswith(("MIT", "Apache-2.0", "BSD")), name


def test_same_event_links_name_existing_bodies() -> None:
    """A body declared to be the same event as another names a body of the manifest."""
    bodies = read_manifest()["bodies"]
    for entry in bodies.values():
        if "same_event_as" in entry:
            assert entry["same_event_as"] in bodies


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


def test_manifest_names_exactly_the_fixture_files() -> None:
    """Every MANIFEST.json entry has a file and every file has a MANIFEST.json entry."""
    assert sorted(read_expected()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_expected_matches_the_fixture_items(name: str) -> None:
    """MANIFEST.json lists one envelope per item, with the item's account, standby flag, platform and user."""
    body = json.loads(read_payload(name))
    expected = read_expected()[name]
    items = items_of(body)
    assert len(expected) == len(items)
    platform = "instagram" if body["object"] == "instagram" else "messenger"
    for want, (account_id, standby, item) in zip(expected, items, strict=True):
        assert want["account_id"] == account_id
        assert want["standby"] is (standby or item.get("field") == "standby")
        assert want["platform"] == platform
        assert isinstance(want["timestamp"], int)
        assert want["timestamp"] > 10**12  # ms, also for changes whose entry.time is in seconds
        assert want["user_id"] == user_of(account_id, item)


def test_expected_covers_every_envelope_type() -> None:
    """Together the fixtures exercise every type the envelope schema allows, and no other."""
    schema_types = set(load_envelope_schema()["properties"]["type"]["enum"])
    expected_types = {item["type"] for items in read_expected().values() for item in items}
    assert expected_types == schema_types
