"""Events and dead letters as Kafka records: JSON values, CloudEvents headers (binary mode)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import orjson

from gateway.normalize import DeadLetter, Event

__all__ = ["OutRecord", "dead_letter_record", "event_record", "rfc3339_ms"]

_JSON: Final = b"application/json"
_SPECVERSION: Final = b"1.0"


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def rfc3339_ms(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def event_record(event: Event, topic: str) -> OutRecord:
    headers = [
        ("ce_specversion", _SPECVERSION),
        ("ce_id", event.id.encode()),
        ("ce_type", b"igw.v1." + event.type.encode()),
        ("ce_source", event.source.encode()),
        ("ce_time", rfc3339_ms(event.timestamp).encode()),
        ("content-type", _JSON),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    return OutRecord(topic, event.key.encode(), orjson.dumps(event.envelope), headers)


def dead_letter_record(dead: DeadLetter, topic: str, body: bytes, received_at: int, signature: str | None) -> OutRecord:
    """The raw body, verbatim, with why it could not be used."""
    headers = [
        ("igw_reason", dead.reason.encode()),
        ("igw_detail", dead.detail.encode()),
        ("igw_received_at", str(received_at).encode()),
        ("content-type", _JSON if dead.reason != "not_json" else b"application/octet-stream"),
    ]
    if dead.paths:
        headers.append(("igw_paths", ",".join(dead.paths).encode()))
    if signature:
        headers.append(("igw_signature", signature.encode()))
    return OutRecord(topic, None, body, headers)
