"""The gateway's access log: request metrics and path-only access lines from aiohttp's access-log hook."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from gateway.metrics import observe_request

__all__ = ["ObservingAccessLogger", "RedactedAccessLogger"]


class ObservingAccessLogger(AbstractAccessLogger):
    """Request metrics from aiohttp's access-log hook, called once per request with its duration.

    Cheaper than a middleware (measured: an empty one cost more than this whole hook), and it also
    sees requests no route matched.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        match_info = getattr(request, "match_info", None)  # a web.Request in practice
        resource = match_info.route.resource if match_info is not None else None
        route = resource.canonical if resource is not None else "unmatched"
        observe_request(route, request.method, response.status, time)


class RedactedAccessLogger(ObservingAccessLogger):
    """Metrics, and access lines without query strings: Meta's handshake carries ``hub.verify_token`` there."""

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
