"""Logging: JSON lines in containers, readable lines on a terminal, a request id per request."""

from __future__ import annotations

import contextvars
import itertools
import logging
import secrets
import sys
import time
from typing import Any

import orjson
from aiohttp.web import BaseRequest

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("igw_request_id", default=None)

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}
_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Taken when the record is made, inside the request's context, not when a handler formats it.
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


logging.setLogRecordFactory(_record_with_request_id)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid is not None:
            doc["request_id"] = rid
        doc.update((k, v) for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_"))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [{rid}]" if rid else line


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """``fmt``: ``json``, ``text`` or ``auto`` (text on a terminal, JSON otherwise)."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR; igw reports broker state itself.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


_REQUEST_IDS = itertools.count(1)
_PROCESS_TAG = secrets.token_hex(3)


def bind_request_id(request: BaseRequest) -> None:
    """A cheap id for the log lines of this request: ``X-Request-Id`` when sent, else a counter."""
    request_id.set(request.headers.get("X-Request-Id") or f"{_PROCESS_TAG}-{next(_REQUEST_IDS):x}")
