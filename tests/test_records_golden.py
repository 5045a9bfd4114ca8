"""Kafka records stay byte for byte what they were: topic, key, value and every header, in order.

tests/golden/records.json holds, per body, a SHA-256 over the records ``build_records`` makes of it.
It was written by the implementation before the hot path was tuned (issue #7); a change that alters
one byte of any record fails here. Regenerate only for an intended change of output:

    .venv/bin/python -m tests.test_records_golden --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import payloads as bench_payloads
from igw.normalize import Topic, normalize
from igw.records import OutRecord, build_records
from tests.plugins.payloads import payload_names, read_payload

GOLDEN = Path(__file__).resolve().parent / "golden" / "records.json"
RECEIVED_AT = 1_764_100_000_123
TOPICS = {t: f"igw.{t.value}" for t in Topic}
SIGNATURE = "sha256=" + "ab" * 32


def bodies() -> Iterator[tuple[str, bytes]]:
    """Every recorded Meta body, the benchmark's bodies and a few that must be dead-lettered."""
    for name in payload_names():
        yield name, read_payload(name)
    secret = "golden_secret"
    for signed in [
        *bench_payloads.one_message(secret),
        *bench_payloads.mixed(secret),
        *bench_payloads.batch(secret),
        *bench_payloads.batch(secret, 25),
    ]:
        yield f"bench/{signed.name}", signed.body
    yield "dead/not_json", b"{not json"
    yield "dead/not_object", b"[1,2]"
    yield "dead/no_object", b'{"entry":[]}'
    yield "dead/unsupported_object", b'{"object":"whatsapp_business_account","entry":[]}'
    yield "dead/bad_entry", b'{"object":"page","entry":{}}'
    yield (
        "dead/bad_items",
        (
            b'{"object":"instagram","entry":[{"id":"1","time":1764000000,"messaging":[1,{"sender":{"id":"2"},'
            b'"timestamp":1764000000001,"message":{"mid":"m","text":"\\u00e4"}}],"changes":{}},7,{"id":true}]}'
        ),
    )


def digest(records: list[OutRecord]) -> str:
    h = hashlib.sha256()
    for record in records:
        h.update(repr((record.topic, record.key, record.value, record.headers)).encode())
        h.update(b"\x00")
    return h.hexdigest()


def current() -> dict[str, str]:
    return {
        name: digest(build_records(normalize(body, RECEIVED_AT), TOPICS, body, RECEIVED_AT, SIGNATURE))
        for name, body in bodies()
    }


@pytest.mark.parametrize(("name", "body"), list(bodies()), ids=lambda v: v if isinstance(v, str) else "")
def test_records_are_byte_identical_to_golden(name: str, body: bytes) -> None:
    """Each body's records hash to the value recorded before the hot path was tuned."""
    golden = json.loads(GOLDEN.read_text("utf-8"))
    records = build_records(normalize(body, RECEIVED_AT), TOPICS, body, RECEIVED_AT, SIGNATURE)
    assert digest(records) == golden[name]


def test_golden_file_covers_every_body() -> None:
    """No body is missing from the golden file and none is left over (a renamed fixture must be re-recorded)."""
    assert set(json.loads(GOLDEN.read_text("utf-8"))) == {name for name, _ in bodies()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_records_golden --write")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n", "utf-8")
