"""Meta's signed_request: the documented example verifies, anything forged, expired or malformed is refused."""

from __future__ import annotations

import pytest

from gateway.signed_request import SignedRequestError, SignedRequestRefused, parse_signed_request, sign_request

# Meta's example (Data Deletion Request callback docs), signed with the secret "appsecret".
EXAMPLE = (
    "N32LNcvDGXq0GI1jxm-tj1ysJh2uqkNIBcUhUmTp19k."
    "eyJhbGdvcml0aG0iOiJITUFDLVNIQTI1NiIsImV4cGlyZXMiOjEyOTE4NDA0MDAsImlzc3VlZF9hdCI6MTI5MTgzNjgwMCwidXNlcl9pZCI6IjIxODQ3MSJ9"
)
ISSUED = 1291836800


def test_meta_example_verifies_with_any_configured_secret() -> None:
    """The example is accepted when its secret is one of several (rotation, two Instagram secrets)."""
    signed = parse_signed_request(EXAMPLE, [b"other-secret", b"appsecret"], ISSUED + 60)
    assert (signed.user_id, signed.issued_at, signed.expires) == ("218471", ISSUED, 1291840400)


@pytest.mark.parametrize(
    ("value", "secrets", "now", "reason"),
    [
        (EXAMPLE, [b"wrong"], ISSUED, SignedRequestError.BAD_SIGNATURE),
        (EXAMPLE, [b"appsecret"], 1291840401, SignedRequestError.EXPIRED),
        ("", [b"appsecret"], ISSUED, SignedRequestError.MISSING),
        (None, [b"appsecret"], ISSUED, SignedRequestError.MISSING),
        ("no-dot-here", [b"appsecret"], ISSUED, SignedRequestError.MALFORMED),
        ("%%%." + EXAMPLE.split(".")[1], [b"appsecret"], ISSUED, SignedRequestError.MALFORMED),
        ("x" * 9000 + "." + "y", [b"appsecret"], ISSUED, SignedRequestError.MALFORMED),
        # The signature of the example over a tampered payload.
        (EXAMPLE.split(".")[0] + ".eyJ1c2VyX2lkIjoiMSJ9", [b"appsecret"], ISSUED, SignedRequestError.BAD_SIGNATURE),
    ],
)
def test_refusals(value: str | None, secrets: list[bytes], now: float, reason: SignedRequestError) -> None:
    """Each bad request is refused with its own reason."""
    with pytest.raises(SignedRequestRefused) as caught:
        parse_signed_request(value, secrets, now)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"algorithm": "HMAC-SHA1", "user_id": "1"}, SignedRequestError.BAD_ALGORITHM),
        ({"user_id": "1"}, SignedRequestError.BAD_ALGORITHM),
        ({"algorithm": "HMAC-SHA256"}, SignedRequestError.MALFORMED),
        ({"algorithm": "HMAC-SHA256", "user_id": "12ab"}, SignedRequestError.MALFORMED),
        ({"algorithm": "HMAC-SHA256", "user_id": "1", "issued_at": 4_000_000_000}, SignedRequestError.MALFORMED),
    ],
)
def test_correctly_signed_but_unusable_payloads_are_refused(payload: dict[str, object], reason: str) -> None:
    """A valid signature over a payload that is not Meta's shape does nothing."""
    with pytest.raises(SignedRequestRefused) as caught:
        parse_signed_request(sign_request(payload, b"s"), [b"s"], 1_800_000_000)
    assert caught.value.reason == reason


def test_sign_request_round_trips() -> None:
    """What sign_request builds (tests, igw check) verifies, numeric user ids included."""
    value = sign_request({"algorithm": "HMAC-SHA256", "user_id": 42, "issued_at": 10}, b"s")
    assert parse_signed_request(value, [b"s"], 20).user_id == "42"
