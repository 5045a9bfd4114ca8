"""The gateway's access log: request metrics and path-only access lines from aiohttp's access-log hook."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.metrics import GatewayMetrics

__all__ = ["ObservingAccessLogger", "RedactedAccessLogger", "access_logger_for"]


class ObservingAccessLogger(AbstractAccessLogger):
    """Request metrics from aiohttp's access-log hook, called once per request with its duration.

    Cheaper than a middleware (measured: an empty one cost more than this whole hook), and it also
    sees requests no route matched. Use the class :func:`access_logger_for` makes for an app.
    """

    # aiohttp makes one logger per connection from a class and two fixed arguments, so the app's
    # metrics ride on the class: as cheap per request as a module-level function. No instance
    # __dict__ to look in first.
    __slots__ = ()
    observe_request: Callable[[str, str, int, float], None]

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        match_info = getattr(request, "match_info", None)  # a web.Request in practice
        resource = match_info.route.resource if match_info is not None else None
        route = resource.canonical if resource is not None else "unmatched"
        self.observe_request(route, request.method, response.status, time)


class RedactedAccessLogger(ObservingAccessLogger):
    """Metrics, and access lines without query strings: Meta's handshake carries ``hub.verify_token`` there."""

    __slots__ = ()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        super().log(request, response, time)
        self.logger.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status,
            time * 1000,
            extra={"remote": request.remote, "status": response.status},
        )


def access_logger_for(metrics: GatewayMetrics, *, lines: bool) -> type[ObservingAccessLogger]:
    """The access-log class for an app whose request metrics are ``metrics``; ``lines`` logs each request too."""
    base = RedactedAccessLogger if lines else ObservingAccessLogger
    return type(base.__name__, (base,), {"__slots__": (), "observe_request": staticmethod(metrics.observe_request)})
