"""The gateway's access log and aiohttp's own server log, both cheap and free of secrets.

- Request metrics and path-only access lines come from aiohttp's access-log hook.
- Requests aiohttp refuses before routing (a malformed request line or header, too many headers,
  conflicting lengths) are counted too, as ``route="malformed"``, and aiohttp's ERROR line with a
  traceback for each of them becomes a throttled one-line warning that names only the error's
  type: its message can hold the request line, query string and verify token included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from gateway.lograte import Throttle
from gateway.metrics import GatewayMetrics

__all__ = [
    "MALFORMED_ROUTE",
    "MalformedRequestFilter",
    "ObservingAccessLogger",
    "RedactedAccessLogger",
    "access_logger_for",
    "quiet_server_log",
]

# The route label of requests refused before routing; their method is not known either.
MALFORMED_ROUTE: Final = "malformed"
_NO_METHOD: Final = "-"
_COUNTED_IN: Final = 'igw_http_requests_total{route="malformed"}'

log = logging.getLogger(__name__)


def _route(request: BaseRequest) -> tuple[str, str]:
    """(route template, method); route is ``unmatched`` when no route matched, ``malformed`` before routing."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        # A web.Request asserts it was routed; a malformed request never was.
        return MALFORMED_ROUTE, _NO_METHOD
    return (resource.canonical if resource is not None else "unmatched"), request.method


class ObservingAccessLogger(AbstractAccessLogger):
    """Request metrics from aiohttp's access-log hook, called once per request with its duration.

    Cheaper than a middleware (measured: an empty one cost more than this whole hook), and it also
    sees requests no route matched and requests refused before routing. Use the class
    :func:`access_logger_for` makes for an app.
    """

    # aiohttp makes one logger per connection from a class and two fixed arguments, so the app's
    # metrics ride on the class: as cheap per request as a module-level function.
    __slots__ = ()
    observe_request: Callable[[str, str, int, float], None]

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route, method = _route(request)
        self.observe_request(route, method, response.status, time)


class RedactedAccessLogger(ObservingAccessLogger):
    """Metrics, and access lines without query strings: Meta's handshake carries ``hub.verify_token`` there."""

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route, method = _route(request)
        self.observe_request(route, method, response.status, time)
        self.logger.info(
            "%s %s %s %.1fms",
            method,
            request.path if route != MALFORMED_ROUTE else MALFORMED_ROUTE,
            response.status,
            time * 1000,
            extra={"remote": request.remote, "status": response.status},
        )


class MalformedRequestFilter(logging.Filter):
    """On ``aiohttp.server``: malformed requests become one throttled warning line without a traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.throttle = Throttle(log)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True  # a handler's own exception: a bug, worth its traceback
        held = self.throttle.allow()
        if held is None:
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        # The type only: the exception's message may quote the request line and its query string.
        if held:
            record.msg = "refused %d malformed HTTP requests in the last %.0fs (the last: %s); counted in %s"
            record.args = (held + 1, self.throttle.interval, type(exc).__name__, _COUNTED_IN)
        else:
            record.msg = "refused a malformed HTTP request (%s); the next ones within %.0fs are only counted in %s"
            record.args = (type(exc).__name__, self.throttle.interval, _COUNTED_IN)
        record.exc_info = None
        record.exc_text = None
        return True


def quiet_server_log() -> None:
    """Install ``MalformedRequestFilter`` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())


def access_logger_for(metrics: GatewayMetrics, *, lines: bool) -> type[ObservingAccessLogger]:
    """The access-log class for an app whose request metrics are ``metrics``; ``lines`` logs each request too."""
    base = RedactedAccessLogger if lines else ObservingAccessLogger
    return type(base.__name__, (base,), {"__slots__": (), "observe_request": staticmethod(metrics.observe_request)})
