"""Meta webhook bodies recorded as files (tests/payloads/), read as the exact bytes Meta signs.

Each ``<event>.json`` is one body as Meta POSTs it: compact, non-ASCII as ``\\uXXXX``, ``/`` as
``\\/``. ``MANIFEST.json`` says, for each file, where the body comes from (a page of Meta's
documentation, another open-source project's fixture with its licence, or igw's own hand-made
shape where no public one was found), what was filled in for the source's placeholders, and the
envelopes the body must become, in order: at least ``type``, ``topic``, ``platform``,
``account_id``, ``user_id`` (``null`` for account-level events), ``timestamp`` (ms) and
``standby``, and for sourced bodies the fields of the type object that Meta's semantics fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PAYLOAD_DIR = Path(__file__).resolve().parent.parent / "payloads"
MANIFEST_FILE = "MANIFEST.json"
# The envelope fields every manifest event names (the short form test_normalize compares).
EXPECTED_FIELDS = ("type", "standby", "user_id", "account_id", "timestamp", "platform")


def payload_names() -> list[str]:
    """Every fixture file name, sorted (for ``pytest.mark.parametrize``)."""
    return sorted(p.name for p in PAYLOAD_DIR.glob("*.json") if p.name != MANIFEST_FILE)


def read_payload(name: str) -> bytes:
    """The raw bytes of one fixture, exactly as Meta would send them."""
    return (PAYLOAD_DIR / name).read_bytes()


def read_manifest() -> dict[str, Any]:
    """The whole manifest: ``received_at`` and, per file, its source and expected envelopes."""
    manifest: dict[str, Any] = json.loads((PAYLOAD_DIR / MANIFEST_FILE).read_text("utf-8"))
    return manifest


def read_expected() -> dict[str, list[dict[str, Any]]]:
    """File name -> the short form (EXPECTED_FIELDS) of each expected envelope, in delivery order."""
    bodies = read_manifest()["bodies"]
    return {
        name: [{k: event[k] for k in EXPECTED_FIELDS} for event in entry["events"]] for name, entry in bodies.items()
    }


@pytest.fixture
def meta_payload() -> Callable[[str], bytes]:
    """Reads a recorded Meta body by file name, as raw bytes."""
    return read_payload
