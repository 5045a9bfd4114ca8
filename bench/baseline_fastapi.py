"""The baseline: a webhook endpoint as common setup guides write it, FastAPI on uvicorn[standard].

Checks the signature, parses the JSON and awaits aiokafka's ``send_and_wait`` for each event,
with aiokafka's default producer settings (acks=all, as igw uses). Runs from its own venv
(bench/results/.venv-baseline), never from igw's dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse

APP_SECRET = os.environ["INSTAGRAM_APP_SECRET"].encode()
TOPIC = os.environ.get("BASELINE_TOPIC", "instagram-webhooks")
producer: AIOKafkaProducer | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global producer  # the shape these guides use
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        acks="all",
        enable_idempotence=False,  # Tansu does not support aiokafka's idempotent producer
    )
    await producer.start()
    try:
        yield
    finally:
        await producer.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/api/v1/instagram/webhook")
async def webhook(request: Request) -> PlainTextResponse:
    body = await request.body()
    expected = "sha256=" + hmac.new(APP_SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(request.headers.get("x-hub-signature-256", ""), expected):
        raise HTTPException(status_code=403, detail="bad signature")
    payload = json.loads(body)
    assert producer is not None
    for entry in payload.get("entry", []):
        for event in entry.get("messaging", []) + entry.get("changes", []):
            key = event.get("sender", {}).get("id") or entry.get("id")
            await producer.send_and_wait(TOPIC, json.dumps(event).encode(), key=str(key).encode())
    return PlainTextResponse("EVENT_RECEIVED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # uvicorn[standard] picks uvloop and httptools on its own.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
