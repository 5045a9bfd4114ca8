"""Signed webhook traffic for stack tests: the mix a small business account sees, with current times."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import aiohttp

from gateway.signature import sign
from tests.plugins.gateway import meta_bytes

ACCOUNT = "17841400000000000"


def _item(user: str, key: str, value: dict[str, Any], *, echo: bool = False) -> dict[str, Any]:
    sender, recipient = (ACCOUNT, user) if echo else (user, ACCOUNT)
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": int(time.time() * 1000), key: value}


def _body(*items: dict[str, Any]) -> bytes:
    entry = {"id": ACCOUNT, "time": int(time.time() * 1000), "messaging": list(items)}
    return meta_bytes({"object": "instagram", "entry": [entry]})


def _mid() -> str:
    return f"aWdf{uuid.uuid4().hex}"


def round_bodies(n: int) -> list[bytes]:
    """One round of traffic: new and returning users, buttons, media, a reaction, a person typing."""
    new_user = f"9{n:015d}"
    regular = f"8{n % 3:015d}"
    bodies = [
        _body(_item(new_user, "message", {"mid": _mid(), "text": "Hi, can I book an appointment?"})),
        _body(_item(regular, "message", {"mid": _mid(), "text": "Opening hours?"})),
        _body(
            _item(
                new_user,
                "message",
                {"mid": _mid(), "text": "General practice", "quick_reply": {"payload": "BOOK_GP"}},
            )
        ),
        _body(_item(regular, "postback", {"mid": _mid(), "title": "Book", "payload": "BOOK"})),
        _body(
            _item(
                regular,
                "message",
                {"mid": _mid(), "attachments": [{"type": "image", "payload": {"url": "https://x.invalid/i.jpg"}}]},
            )
        ),
        _body(_item(new_user, "reaction", {"mid": _mid(), "action": "react", "reaction": "love", "emoji": "❤"})),
    ]
    if n % 2 == 0:
        # A person answers from the inbox: an echo without igw's app id.
        echo = {"mid": _mid(), "text": "Hello, Anna here", "is_echo": True}
        bodies.append(_body(_item(new_user, "message", echo, echo=True)))
    return bodies


async def feed(url: str, secret: str, seconds: float, *, pace: float = 0.5) -> int:
    """POST signed rounds for ``seconds``, plus one forged body and one unusable signed body per round."""
    posted = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:

        async def post(body: bytes, signature: str) -> int:
            headers = {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}
            async with http.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        for n in itertools.count():
            if time.monotonic() >= deadline and n > 0:
                break
            for body in round_bodies(n):
                assert await post(body, sign(body, secret)) == 200
                posted += 1
            forged = _body(_item("1", "message", {"mid": _mid(), "text": "x"}))
            assert await post(forged, sign(forged, "not-the-secret")) in {401, 403}
            broken = b'{"object": "instagram", "entry": [' + str(n).encode()
            assert await post(broken, sign(broken, secret)) == 200
            await asyncio.sleep(pace)
    return posted
