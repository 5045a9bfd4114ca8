"""Request metrics: every answer is counted by route template and status, unknown paths included."""

from __future__ import annotations

from tests.plugins.gateway import WEBHOOK, GatewayClient, dm_body, metric, post_signed


async def test_requests_are_counted_by_route_template(gateway_client: GatewayClient) -> None:
    """A 200 and a 403 on the webhook, and a 404 on an unknown path, each land on their own series."""

    def count(route: str, method: str, status: str) -> float:
        return metric(gateway_client, "igw_http_requests_total", {"route": route, "method": method, "status": status})

    ok, forbidden, unknown = (
        count(WEBHOOK, "POST", "200"),
        count(WEBHOOK, "POST", "403"),
        count("unmatched", "GET", "404"),
    )
    durations = metric(gateway_client, "igw_http_request_duration_seconds_count", {"route": WEBHOOK})
    assert (await post_signed(gateway_client, dm_body())).status == 200
    assert (await gateway_client.post(WEBHOOK, data=b"{}")).status == 403
    assert (await gateway_client.get("/no/such/path/12345")).status == 404
    assert count(WEBHOOK, "POST", "200") == ok + 1
    assert count(WEBHOOK, "POST", "403") == forbidden + 1
    assert count("unmatched", "GET", "404") == unknown + 1
    assert metric(gateway_client, "igw_http_request_duration_seconds_count", {"route": WEBHOOK}) == durations + 2
