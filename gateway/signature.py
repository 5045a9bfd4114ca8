"""``X-Hub-Signature-256`` over the raw request body.

Meta signs the bytes as sent (non-ASCII as ``\\uXXXX``, ``/`` as ``\\/``), so the check hashes
exactly the received bytes: parsing and re-serializing first would break it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Protocol

__all__ = ["SignatureVerdict", "SignatureVerifier", "sign"]

_PREFIX = "sha256="


class _KeyedMac(Protocol):
    def copy(self) -> _KeyedMac: ...
    def update(self, msg: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _stdlib_keyed(key: bytes) -> _KeyedMac:
    return hmac.new(key, digestmod=hashlib.sha256)


_keyed_hmac: Callable[[bytes], _KeyedMac]
try:
    # OpenSSL's HMAC object itself: copy/update/digest without hmac.HMAC's Python wrapper around it
    # (measured ~1.1 µs against ~1.6 µs per 600-byte body; hmac.digest() is slower still, as it
    # hashes the key pads on every call). Private to CPython, hence the fallback.
    from _hashlib import hmac_new

    def _openssl_keyed(key: bytes) -> _KeyedMac:
        return hmac_new(key, digestmod="sha256")

    _keyed_hmac = _openssl_keyed
except ImportError:  # pragma: no cover - CPython without OpenSSL
    _keyed_hmac = _stdlib_keyed


class SignatureVerdict(StrEnum):
    OK = "ok"
    MISSING = "missing"
    MALFORMED = "malformed"
    MISMATCH = "mismatch"


def sign(body: bytes, secret: str) -> str:
    """The header value Meta would send for ``body``."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SignatureVerifier:
    """Checks a signature against every configured secret (rotation; IG apps with two secrets)."""

    __slots__ = ("_keyed",)

    def __init__(self, secrets: Iterable[str]) -> None:
        # Keyed HMAC objects are copied per request: the key schedule is computed once.
        self._keyed = tuple(_keyed_hmac(s.encode()) for s in secrets)
        if not self._keyed:
            raise ValueError("at least one app secret is required")

    def verify(self, body: bytes, header: str | None) -> SignatureVerdict:
        if not header:
            return SignatureVerdict.MISSING
        if len(header) != 71 or not header.startswith(_PREFIX):
            return SignatureVerdict.MALFORMED
        try:
            claimed = bytes.fromhex(header[7:])  # either case of hex digit
        except ValueError:
            return SignatureVerdict.MALFORMED
        if len(claimed) != 32:  # fromhex skips whitespace between pairs: 64 characters held fewer
            return SignatureVerdict.MALFORMED
        matched = False
        # Every secret is tried, so the time taken does not tell which one matched.
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(body)
            matched |= hmac.compare_digest(mac.digest(), claimed)
        return SignatureVerdict.OK if matched else SignatureVerdict.MISMATCH
