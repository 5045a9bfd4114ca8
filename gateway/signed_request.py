"""Meta's ``signed_request``: ``base64url(signature).base64url(payload)``, HMAC-SHA256 of the payload.

Sent to the Data Deletion Request and Deauthorize callbacks. The signature is checked against
every configured app secret in constant time, over the payload exactly as received (before decoding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = ["SignedRequest", "SignedRequestError", "SignedRequestRefused", "parse_signed_request", "sign_request"]

# Meta's payloads are a few hundred bytes; a bound keeps decoding cheap for junk.
MAX_SIGNED_REQUEST = 8192
# How far issued_at may lie in the future (clock skew) before the request is refused.
CLOCK_SKEW_SECONDS = 300


class SignedRequestError(StrEnum):
    """Why a signed_request was refused: a metric label and the answer's ``error`` code."""

    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    BAD_ALGORITHM = "bad_algorithm"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class SignedRequest:
    user_id: str
    issued_at: int | None
    expires: int | None
    payload: dict[str, Any]


class SignedRequestRefused(Exception):
    def __init__(self, reason: SignedRequestError) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _b64url(text: str) -> bytes:
    # Strict: characters outside base64url are an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def parse_signed_request(value: str | None, secrets: Iterable[bytes], now: float) -> SignedRequest:
    """The verified payload, or :class:`SignedRequestRefused` naming why not."""
    if not value:
        raise SignedRequestRefused(SignedRequestError.MISSING)
    if len(value) > MAX_SIGNED_REQUEST or "." not in value:
        raise SignedRequestRefused(SignedRequestError.MALFORMED)
    encoded_sig, encoded_payload = value.split(".", 1)
    try:
        signature = _b64url(encoded_sig)
    except (binascii.Error, ValueError):
        raise SignedRequestRefused(SignedRequestError.MALFORMED) from None
    raw_payload = encoded_payload.encode("ascii", "replace")
    # Every secret is tried, with no early exit: the time taken says nothing about which one matched.
    matched = False
    for secret in secrets:
        expected = hmac.new(secret, raw_payload, hashlib.sha256).digest()
        matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignedRequestRefused(SignedRequestError.BAD_SIGNATURE)
    try:
        payload = orjson.loads(_b64url(encoded_payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise SignedRequestRefused(SignedRequestError.MALFORMED) from None
    if not isinstance(payload, dict):
        raise SignedRequestRefused(SignedRequestError.MALFORMED)
    if str(payload.get("algorithm", "")).upper() != "HMAC-SHA256":
        raise SignedRequestRefused(SignedRequestError.BAD_ALGORITHM)
    user_id = payload.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.isdigit():
        raise SignedRequestRefused(SignedRequestError.MALFORMED)
    issued_at = _int_or_none(payload.get("issued_at"))
    expires = _int_or_none(payload.get("expires"))
    if expires is not None and expires < now:
        raise SignedRequestRefused(SignedRequestError.EXPIRED)
    if issued_at is not None and issued_at > now + CLOCK_SKEW_SECONDS:
        raise SignedRequestRefused(SignedRequestError.MALFORMED)
    return SignedRequest(user_id=user_id, issued_at=issued_at, expires=expires, payload=payload)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def sign_request(payload: dict[str, Any], secret: bytes) -> str:
    """A signed_request as Meta builds one (for tests and ``igw check``)."""
    body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
    sig = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()).rstrip(b"=")
    return f"{sig.decode()}.{body.decode()}"
