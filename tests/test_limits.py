"""Request size and encoding limits answer clearly without reading what they refuse."""

from __future__ import annotations

import asyncio
import io

from tests.plugins.gateway import WEBHOOK, GatewayClient, dm_body, post_signed


async def test_declared_oversize_body_gets_413(memory_gateway_client: GatewayClient) -> None:
    """A Content-Length over the limit is refused up front."""
    body = io.BytesIO(b"x" * (1024 * 1024 + 1))
    resp = await memory_gateway_client.post(WEBHOOK, data=body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"


async def test_chunked_oversize_body_gets_413(memory_gateway_client: GatewayClient) -> None:
    """A chunked body is cut off at the limit."""

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"y" * 65536
            await asyncio.sleep(0)

    resp = await memory_gateway_client.post(
        WEBHOOK, data=chunks(), headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    assert resp.status == 413


async def test_compressed_body_gets_415(memory_gateway_client: GatewayClient) -> None:
    """Compressed bodies are refused: Meta signs uncompressed bytes, and bombs stay out."""
    resp = await memory_gateway_client.post(
        WEBHOOK, data=b"\x1f\x8b" + b"\0" * 20, headers={"Content-Encoding": "gzip"}
    )
    assert resp.status == 415


async def test_limit_is_inclusive(memory_gateway_client: GatewayClient) -> None:
    """A body under the limit is processed normally."""
    assert (await post_signed(memory_gateway_client, dm_body())).status == 200
