"""Sealing what a person wrote: per-person encryption of envelope content (crypto-shredding).

With ``IGW_CONTENT_KEYS`` set, the gateway replaces an envelope's content — the type's object
(``message``, ``postback``, ``change``, ...) and ``raw`` — with ``sealed``::

    "sealed": {"alg": "A256GCM", "kid": "<subject>#<generation>", "iv": "<b64>", "ct": "<b64>"}

encrypted with the key of the conversation's person. The routing fields (ids, type, parties,
times) stay readable, so partitioning, ordering and counting need no key. Erasing a person
deletes their keys: every record of theirs in Kafka becomes unreadable, other people's are not.
A body from before the erasure that arrives afterwards is published with ``"erased": true`` and no
content. The envelope's id is the additional data of the encryption: a sealed part cannot be
moved to another envelope unnoticed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import Iterable
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from igw.envelope import COMPUTED_FIELDS
from igw.keystore import KEY_BYTES, KeyStore, new_kid
from igw.normalize import Event

__all__ = ["ALG", "CONTENT_FIELDS", "WATCH_INTERVAL", "Opener", "Sealer", "is_sealed"]

log = logging.getLogger(__name__)

ALG: Final = "A256GCM"
# Routing fields, readable without a key; every other field of the envelope is content.
ROUTING_FIELDS: Final = frozenset((*COMPUTED_FIELDS, "recovered"))
CONTENT_FIELDS: Final = "sealed", "erased"
_CACHE_LIMIT: Final = 100_000
# How often a process asks the key store whether someone was erased (one small read). A DM that a
# process seals within this long after an erasure may still use the erased key: it then reads as erased.
WATCH_INTERVAL: Final = 0.25
_KID: Final = re.compile(rb'"sealed":\{"alg":"A256GCM","kid":"([^"]+)"')
_b64 = base64.b64encode
_dumps = orjson.dumps
_urandom = os.urandom
_tuple_new = tuple.__new__
_unb64 = base64.b64decode


def is_sealed(envelope: dict[str, Any]) -> bool:
    return "sealed" in envelope or envelope.get("erased") is True


class _Keys:
    """The keys a process has fetched, dropped whenever the store's epoch moves (an erasure)."""

    def __init__(self, store: KeyStore) -> None:
        self.store = store
        self.current: dict[str, tuple[str, AESGCM]] = {}
        self.by_kid: dict[str, AESGCM | None] = {}
        self.erased: dict[str, int | None] = {}
        self._epoch: int | None = None

    def clear_if_full(self) -> None:
        if len(self.by_kid) > _CACHE_LIMIT or len(self.current) > _CACHE_LIMIT:
            self.current.clear()
            self.by_kid.clear()
            self.erased.clear()

    async def refresh(self) -> bool:
        """Drop the cache when another process erased someone; True when it was dropped."""
        epoch = await self.store.epoch()
        changed = self._epoch is not None and epoch != self._epoch
        if changed:
            self.current.clear()
            self.by_kid.clear()
            self.erased.clear()
        self._epoch = epoch
        return changed

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Poll the epoch forever (a background task of every process that caches keys)."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a store hiccup: keep the cache, try again
                log.warning("content key store not answering (%s); cached keys kept", type(exc).__name__)
            await asyncio.sleep(interval)


class Sealer(_Keys):
    """The gateway's side: ``prepare`` (async, fetches keys of new people) then ``seal`` (sync, per event)."""

    async def prepare(self, events: Iterable[Event]) -> None:
        for event in events:
            subject = event.subject
            if subject is None or subject in self.current:
                continue
            self.clear_if_full()
            erased_at = await self.store.erased_at(subject)
            self.erased[subject] = erased_at
            found = await self.store.current(subject)
            if found is None:
                found = await self.store.create(subject, new_kid(subject), AESGCM.generate_key(KEY_BYTES * 8))
            kid, key = found
            self.current[subject] = (kid, AESGCM(key))

    def seal(self, event: Event) -> Event:
        """The event with its content sealed; events without a person are returned as they are."""
        subject = event.subject
        if subject is None:
            return event
        routing: dict[str, Any] = {}
        content: dict[str, Any] = {}
        for name, value in event.envelope.items():
            if name in ROUTING_FIELDS:
                routing[name] = value
            else:
                content[name] = value
        erased_at = self.erased.get(subject)
        if erased_at is not None and event.timestamp <= erased_at:
            routing["erased"] = True
        else:
            kid, aead = self.current[subject]
            iv = _urandom(12)
            ct = aead.encrypt(iv, _dumps(content), event.id.encode())
            routing["sealed"] = {"alg": ALG, "kid": kid, "iv": _b64(iv).decode(), "ct": _b64(ct).decode()}
        # Event is a NamedTuple: tuple.__new__ skips _replace's Python-level field walk (hot path).
        return _tuple_new(Event, (*event[:7], routing))


class Opener(_Keys):
    """A consumer's side: the envelope with its content back, or marked ``erased`` when the key is gone."""

    async def fetch(self, kid: str) -> None:
        if kid not in self.by_kid:
            self.clear_if_full()
            key = await self.store.key(kid)
            self.by_kid[kid] = AESGCM(key) if key is not None else None

    async def prefetch(self, values: Iterable[bytes | None]) -> None:
        """Fetch the keys a batch of raw records needs, so :meth:`open_cached` can open them synchronously."""
        for value in values:
            if value and b'"sealed"' in value:
                found = _KID.search(value)
                if found is not None:
                    await self.fetch(found.group(1).decode())

    async def open(self, envelope: dict[str, Any]) -> dict[str, Any]:
        sealed = envelope.get("sealed")
        if isinstance(sealed, dict) and isinstance(sealed.get("kid"), str):
            await self.fetch(sealed["kid"])
        return self.open_cached(envelope)

    def open_cached(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """:meth:`open` for keys already fetched; ``LookupError`` when the key was not."""
        sealed = envelope.get("sealed")
        if sealed is None:
            return envelope
        kid = sealed.get("kid") if isinstance(sealed, dict) else None
        if not isinstance(kid, str):
            raise ValueError("sealed content without a key id")
        aead = self.by_kid[kid]  # LookupError: not fetched
        opened = {k: v for k, v in envelope.items() if k != "sealed"}
        if aead is None:
            opened["erased"] = True
            return opened
        try:
            plain = aead.decrypt(_unb64(sealed["iv"]), _unb64(sealed["ct"]), str(envelope.get("id", "")).encode())
        except (InvalidTag, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"sealed content does not open ({type(exc).__name__})") from None
        opened.update(orjson.loads(plain))
        return opened
