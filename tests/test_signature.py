"""X-Hub-Signature-256 checks against Meta's published vectors and the bytes Meta really sends."""

from __future__ import annotations

import pytest

from gateway import signature
from gateway.signature import SignatureVerdict, SignatureVerifier, sign

VECTORS = [
    (
        "my_app_secret",
        b'{"object":"instagram","entry":[]}',
        "sha256=a6fe43e7fccbea5be5604ac00da14a47dd4813a83c2f868710cd558b9d0b73ab",
    ),
    ("my_app_secret", b"", "sha256=30bb2ab83d5e42814f3d42faeac59cbb9e0ffef97d2c697133115cf266c72177"),
    (
        "test_app_secret",
        b'{"object":"whatsapp_business_account","entry":[]}',
        "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756",
    ),
]


@pytest.mark.parametrize(("secret", "body", "expected"), VECTORS)
def test_published_vectors(secret: str, body: bytes, expected: str) -> None:
    """sign() reproduces known HMAC-SHA256 vectors of Meta's signature scheme and the verifier accepts them."""
    assert sign(body, secret) == expected
    assert SignatureVerifier([secret]).verify(body, expected) is SignatureVerdict.OK


def test_escaped_bytes_are_hashed_as_received() -> None:
    """A body with \\uXXXX and \\/ escapes verifies; its re-serialized unicode form does not."""
    escaped = (
        b'{"object":"instagram","entry":[{"text":"\\u00e4\\u00f6\\u00e5 https:\\/\\/x.y","emoji":"\\u2764\\ufe0f"}]}'
    )
    header = sign(escaped, "my_app_secret")
    verifier = SignatureVerifier(["my_app_secret"])
    assert verifier.verify(escaped, header) is SignatureVerdict.OK
    reencoded = '{"object":"instagram","entry":[{"text":"äöå https://x.y","emoji":"❤️"}]}'.encode()
    assert verifier.verify(reencoded, header) is SignatureVerdict.MISMATCH


def test_any_configured_secret_verifies() -> None:
    """Either of two secrets (rotation, or IG apps' two secrets) is accepted; a third is not."""
    body = b'{"object":"instagram","entry":[]}'
    verifier = SignatureVerifier(["old_secret", "my_app_secret"])
    assert verifier.verify(body, sign(body, "my_app_secret")) is SignatureVerdict.OK
    assert verifier.verify(body, sign(body, "old_secret")) is SignatureVerdict.OK
    assert verifier.verify(body, sign(body, "someone_else")) is SignatureVerdict.MISMATCH


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, SignatureVerdict.MISSING),
        ("", SignatureVerdict.MISSING),
        ("sha1=" + "0" * 40, SignatureVerdict.MALFORMED),
        ("sha256=" + "z" * 64, SignatureVerdict.MALFORMED),
        ("sha256=" + "0" * 63, SignatureVerdict.MALFORMED),
        ("sha256=" + "0" * 64, SignatureVerdict.MISMATCH),
        # 64 characters, but not 64 hex digits: spaces between pairs, non-ASCII digits.
        ("sha256=" + "00 " * 21 + "0", SignatureVerdict.MALFORMED),
        ("sha256=" + "\u0660" * 64, SignatureVerdict.MALFORMED),
        ("sha256=" + "\uff10" * 64, SignatureVerdict.MALFORMED),
    ],
)
def test_bad_headers(header: str | None, verdict: SignatureVerdict) -> None:
    """Missing, malformed and wrong signatures each get their own verdict."""
    assert SignatureVerifier(["my_app_secret"]).verify(b"{}", header) is verdict


def test_uppercase_hex_is_accepted() -> None:
    """Hex digits are compared case-insensitively."""
    body = b'{"object":"page","entry":[]}'
    header = sign(body, "my_app_secret")
    assert SignatureVerifier(["my_app_secret"]).verify(body, "sha256=" + header[7:].upper()) is SignatureVerdict.OK


@pytest.mark.parametrize(("secret", "body", "expected"), VECTORS)
def test_stdlib_hmac_fallback_gives_the_same_verdicts(
    secret: str, body: bytes, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenSSL's HMAC object is not importable, hmac.new's wrapper verifies the same vectors."""
    monkeypatch.setattr(signature, "_keyed_hmac", signature._stdlib_keyed)
    verifier = SignatureVerifier([secret])
    assert verifier.verify(body, expected) is SignatureVerdict.OK
    assert verifier.verify(body + b" ", expected) is SignatureVerdict.MISMATCH
