"""``X-Hub-Signature-256`` over the raw request body.

Meta signs the bytes as sent (non-ASCII as ``\\uXXXX``, ``/`` as ``\\/``), so the check hashes
exactly the received bytes: parsing and re-serializing first would break it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["SignatureVerdict", "SignatureVerifier", "sign"]

_PREFIX = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdef")


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
        self._keyed = tuple(hmac.new(s.encode(), digestmod=hashlib.sha256) for s in secrets)
        if not self._keyed:
            raise ValueError("at least one app secret is required")

    def verify(self, body: bytes, header: str | None) -> SignatureVerdict:
        if not header:
            return SignatureVerdict.MISSING
        if len(header) != 71 or not header.startswith(_PREFIX):
            return SignatureVerdict.MALFORMED
        claimed = header[7:].lower()
        if not _HEX_DIGITS.issuperset(claimed):
            return SignatureVerdict.MALFORMED
        claimed_bytes = claimed.encode()
        matched = False
        # Every secret is tried, so the time taken does not tell which one matched.
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(body)
            matched |= hmac.compare_digest(mac.hexdigest().encode(), claimed_bytes)
        return SignatureVerdict.OK if matched else SignatureVerdict.MISMATCH
