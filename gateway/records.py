"""Events and dead letters as Kafka records: JSON values, CloudEvents headers (binary mode)."""

from __future__ import annotations

import time
from typing import Any, Final, NamedTuple

import orjson

from gateway.normalize import DeadLetter, Event

__all__ = ["OutRecord", "dead_letter_record", "event_record", "rfc3339_ms"]

_JSON: Final = b"application/json"
_SPECVERSION: Final = b"1.0"


class OutRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


_last_second: list[Any] = [None, ""]


def rfc3339_ms(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    # Events of a burst share their second: format it once.
    if _last_second[0] != seconds:
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_last_second[1]}.{millis:03d}Z"


_ce_types: dict[str, bytes] = {}
_ce_sources: dict[str, bytes] = {}


def _ce_type(type_: str) -> bytes:
    encoded = _ce_types.get(type_)
    if encoded is None:
        encoded = _ce_types[type_] = b"igw.v1." + type_.encode()
    return encoded


def _ce_source(source: str) -> bytes:
    encoded = _ce_sources.get(source)
    if encoded is None:
        if len(_ce_sources) > 10_000:  # one entry per business account; bound it all the same
            _ce_sources.clear()
        encoded = _ce_sources[source] = source.encode()
    return encoded


def event_record(event: Event, topic: str) -> OutRecord:
    headers = [
        ("ce_specversion", _SPECVERSION),
        ("ce_id", event.id.encode()),
        ("ce_type", _ce_type(event.type)),
        ("ce_source", _ce_source(event.source)),
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
