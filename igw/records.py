"""Events and dead letters as Kafka records: JSON values, CloudEvents headers (binary mode)."""

from __future__ import annotations

import time
from typing import Any, Final, NamedTuple

import orjson

from igw.envelope import CE_SPECVERSION, Header, Topic, ce_type
from igw.normalize import DeadLetter, Event, Normalized

__all__ = ["OutRecord", "build_records", "cloudevent_headers", "dead_letter_record", "event_record", "rfc3339_ms"]

_JSON: Final = b"application/json"


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
_SPECVERSION_HEADER: Final = (Header.SPECVERSION, CE_SPECVERSION)
_CONTENT_TYPE_HEADER: Final = (Header.CONTENT_TYPE, _JSON)
_type_headers: dict[str, tuple[str, bytes]] = {}
_source_headers: dict[str, tuple[str, bytes]] = {}
_SOURCES_KEPT: Final = 10_000  # one per business account; bounded all the same

_dumps: Final = orjson.dumps
# ``OutRecord(...)`` runs a Python-level ``__new__``; ``tuple.__new__`` builds the same object in C.
_tuple_new: Final = tuple.__new__


def _type_header(type_: str) -> tuple[str, bytes]:
    header = _type_headers[type_] = (Header.TYPE, ce_type(type_))
    return header


def _source_header(source: str) -> tuple[str, bytes]:
    if len(_source_headers) > _SOURCES_KEPT:
        _source_headers.clear()
    header = _source_headers[source] = (Header.SOURCE, source.encode())
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
        (Header.ID, event_id.encode()),
        _type_headers.get(type_) or _type_header(type_),
        _source_headers.get(source) or _source_header(source),
        (Header.TIME, _time_second[1] + _MILLIS[millis]),
        _CONTENT_TYPE_HEADER,
    ]
    if subject is not None:
        # The subject is the conversation, which is also the key: encoded once.
        headers.append((Header.SUBJECT, key_bytes if subject is key else subject.encode()))
    return _tuple_new(OutRecord, (topic, key_bytes, _dumps(envelope), headers))


def cloudevent_headers(
    event_id: str, type_: str, source: str, time_ms: int, subject: str | None = None
) -> list[tuple[str, bytes]]:
    """The headers of a JSON record that is not a gateway event (a reply outcome, say)."""
    headers = [
        _SPECVERSION_HEADER,
        (Header.ID, event_id.encode()),
        (Header.TYPE, ce_type(type_)),
        (Header.SOURCE, source.encode()),
        (Header.TIME, rfc3339_ms(time_ms).encode()),
        _CONTENT_TYPE_HEADER,
    ]
    if subject is not None:
        headers.append((Header.SUBJECT, subject.encode()))
    return headers


def dead_letter_record(dead: DeadLetter, topic: str, body: bytes, received_at: int, signature: str | None) -> OutRecord:
    """The raw body, verbatim, with why it could not be used."""
    headers = [
        (Header.REASON, dead.reason.encode()),
        (Header.DETAIL, dead.detail.encode()),
        (Header.RECEIVED_AT, str(received_at).encode()),
        (Header.CONTENT_TYPE, _JSON if dead.reason != "not_json" else b"application/octet-stream"),
    ]
    if dead.paths:
        headers.append((Header.PATHS, ",".join(dead.paths).encode()))
    if signature:
        headers.append((Header.SIGNATURE, signature.encode()))
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
