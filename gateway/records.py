"""Events and dead letters as Kafka records: JSON values, CloudEvents headers (binary mode)."""

from __future__ import annotations

import time
from typing import Any, Final, NamedTuple

import orjson

from gateway.normalize import DeadLetter, Event, Normalized, Topic

__all__ = ["OutRecord", "build_records", "dead_letter_record", "event_record", "rfc3339_ms"]

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


# ce_time as bytes, as rfc3339_ms spells it: the second formatted once per second, the millisecond
# part from a table. [second, b"YYYY-MM-DDTHH:MM:SS"]
_time_second: list[Any] = [None, b""]
_MILLIS: Final = tuple(f".{millis:03d}Z".encode() for millis in range(1000))

# Header tuples that repeat across records are built once and shared (tuples are immutable);
# only each record's list is its own.
_SPECVERSION_HEADER: Final = ("ce_specversion", _SPECVERSION)
_CONTENT_TYPE_HEADER: Final = ("content-type", _JSON)
_type_headers: dict[str, tuple[str, bytes]] = {}
_source_headers: dict[str, tuple[str, bytes]] = {}
_SOURCES_KEPT: Final = 10_000  # one per business account; bounded all the same

_dumps: Final = orjson.dumps
# ``OutRecord(...)`` runs a Python-level ``__new__``; ``tuple.__new__`` builds the same object in C.
_tuple_new: Final = tuple.__new__


def _type_header(type_: str) -> tuple[str, bytes]:
    header = _type_headers[type_] = ("ce_type", b"igw.v1." + type_.encode())
    return header


def _source_header(source: str) -> tuple[str, bytes]:
    if len(_source_headers) > _SOURCES_KEPT:
        _source_headers.clear()
    header = _source_headers[source] = ("ce_source", source.encode())
    return header


def _format_second(seconds: int) -> None:
    _time_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()]


def event_record(event: Event, topic: str) -> OutRecord:
    event_id, type_, _, key, timestamp, source, subject, envelope = event
    seconds, millis = divmod(timestamp, 1000)
    if _time_second[0] != seconds:
        _format_second(seconds)
    key_bytes = key.encode()
    headers = [
        _SPECVERSION_HEADER,
        ("ce_id", event_id.encode()),
        _type_headers.get(type_) or _type_header(type_),
        _source_headers.get(source) or _source_header(source),
        ("ce_time", _time_second[1] + _MILLIS[millis]),
        _CONTENT_TYPE_HEADER,
    ]
    if subject is not None:
        # The subject is the conversation, which is also the key: encoded once.
        headers.append(("ce_subject", key_bytes if subject is key else subject.encode()))
    return _tuple_new(OutRecord, (topic, key_bytes, _dumps(envelope), headers))


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


def build_records(
    normalized: Normalized, topics: dict[Topic, str], body: bytes, received_at: int, signature: str | None
) -> list[OutRecord]:
    """Every record one signed body becomes: the same on the direct path and when drained from the spool."""
    events = normalized.events
    if len(events) == 1:  # the usual body; spares the comprehension's own function call
        event = events[0]
        records = [event_record(event, topics[event.topic])]
    else:
        records = [event_record(e, topics[e.topic]) for e in events]
    dead = normalized.dead_letter
    if dead is not None:
        records.append(dead_letter_record(dead, topics[Topic.DEADLETTER], body, received_at, signature))
    return records
