"""Request metrics: every answer is counted by route template and status, unknown paths included."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.plugins.gateway import WEBHOOK, GatewayClient, dm_body, post_signed


def _count(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("igw_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template(memory_gateway_client: GatewayClient) -> None:
    """A 200 and a 403 on the webhook, and a 404 on an unknown path, each land on their own series."""
    ok, forbidden, unknown = (
        _count(WEBHOOK, "POST", "200"),
        _count(WEBHOOK, "POST", "403"),
        _count("unmatched", "GET", "404"),
    )
    durations = REGISTRY.get_sample_value("igw_http_request_duration_seconds_count", {"route": WEBHOOK}) or 0.0
    assert (await post_signed(memory_gateway_client, dm_body())).status == 200
    assert (await memory_gateway_client.post(WEBHOOK, data=b"{}")).status == 403
    assert (await memory_gateway_client.get("/no/such/path/12345")).status == 404
    assert _count(WEBHOOK, "POST", "200") == ok + 1
    assert _count(WEBHOOK, "POST", "403") == forbidden + 1
    assert _count("unmatched", "GET", "404") == unknown + 1
    assert REGISTRY.get_sample_value("igw_http_request_duration_seconds_count", {"route": WEBHOOK}) == durations + 2
