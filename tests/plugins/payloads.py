"""Meta webhook bodies recorded as files (tests/payloads/), read as the exact bytes Meta signs.

Each ``<event>.json`` is one body as Meta POSTs it: compact, non-ASCII as ``\\uXXXX``, ``/`` as
``\\/``. ``EXPECTED.json`` maps each file to the envelopes it must become, in order: ``type``,
``standby``, ``user_id`` (``null`` for account-level events), ``account_id``, ``timestamp`` (ms)
and ``platform``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PAYLOAD_DIR = Path(__file__).resolve().parent.parent / "payloads"
EXPECTED_FILE = "EXPECTED.json"


def payload_names() -> list[str]:
    """Every fixture file name, sorted (for ``pytest.mark.parametrize``)."""
    return sorted(p.name for p in PAYLOAD_DIR.glob("*.json") if p.name != EXPECTED_FILE)


def read_payload(name: str) -> bytes:
    """The raw bytes of one fixture, exactly as Meta would send them."""
    return (PAYLOAD_DIR / name).read_bytes()


def read_expected() -> dict[str, list[dict[str, Any]]]:
    """File name -> the expected envelope fields of each item, in delivery order."""
    expected: dict[str, list[dict[str, Any]]] = json.loads((PAYLOAD_DIR / EXPECTED_FILE).read_text("utf-8"))
    return expected


@pytest.fixture
def meta_payload() -> Callable[[str], bytes]:
    """Reads a recorded Meta body by file name, as raw bytes."""
    return read_payload
