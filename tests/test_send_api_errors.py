"""Meta's error codes map to error classes through one table; SendError says whether to retry."""

from __future__ import annotations

import pytest

from consumers.send_api.errors import ErrorClass, SendError, classify, code_label


@pytest.mark.parametrize(
    ("http_status", "code", "subcode", "expected"),
    [
        (500, 1, None, ErrorClass.TRANSIENT),
        (500, 2, None, ErrorClass.TRANSIENT),
        (400, 4, None, ErrorClass.RATE_LIMITED),
        (400, 17, None, ErrorClass.RATE_LIMITED),
        (400, 32, None, ErrorClass.RATE_LIMITED),
        (400, 613, None, ErrorClass.RATE_LIMITED),
        (400, 80002, None, ErrorClass.RATE_LIMITED),
        (400, 80006, None, ErrorClass.RATE_LIMITED),
        (400, 10, 2534022, ErrorClass.WINDOW_CLOSED),
        (400, 10, 2018278, ErrorClass.WINDOW_CLOSED),
        (400, 100, 2534014, ErrorClass.USER_UNAVAILABLE),
        (400, 551, None, ErrorClass.USER_UNAVAILABLE),
        (400, 200, 1545041, ErrorClass.USER_UNAVAILABLE),
        (400, 100, 2534015, ErrorClass.INVALID_MESSAGE),
        (400, 100, None, ErrorClass.INVALID_MESSAGE),
        (400, 190, None, ErrorClass.TOKEN_INVALID),
        (400, 190, 460, ErrorClass.TOKEN_INVALID),
        (401, 190, 463, ErrorClass.TOKEN_INVALID),
        (400, 200, 2534041, ErrorClass.ACCOUNT_BLOCKED),
        (400, 100, 2534029, ErrorClass.ACCOUNT_BLOCKED),
        (400, 10, 2018300, ErrorClass.THREAD_OWNED),
        (400, 2018300, None, ErrorClass.THREAD_OWNED),
        (400, 100, 2534037, ErrorClass.THREAD_OWNED),
    ],
)
def test_meta_error_table(http_status: int, code: int, subcode: int | None, expected: ErrorClass) -> None:
    """Each row of the error table in docs/send-api.md gets its class."""
    assert classify(http_status, code, subcode) is expected


@pytest.mark.parametrize(
    ("http_status", "code", "subcode", "expected"),
    [
        (429, None, None, ErrorClass.RATE_LIMITED),
        (500, None, None, ErrorClass.TRANSIENT),
        (502, None, None, ErrorClass.TRANSIENT),
        (None, None, None, ErrorClass.TRANSIENT),
        (400, None, None, ErrorClass.UNKNOWN),
        (400, 10, None, ErrorClass.UNKNOWN),
        (400, 200, None, ErrorClass.UNKNOWN),
        (400, 99999, None, ErrorClass.UNKNOWN),
        (503, 99999, None, ErrorClass.TRANSIENT),
        (429, 99999, None, ErrorClass.RATE_LIMITED),
    ],
)
def test_http_fallbacks(http_status: int | None, code: int | None, subcode: int | None, expected: ErrorClass) -> None:
    """Without a known code: 429 is rate limiting, 5xx and no answer are transient, the rest unknown."""
    assert classify(http_status, code, subcode) is expected


def test_a_known_code_beats_the_http_status() -> None:
    """A 500 carrying a permanent Meta code is not retried."""
    assert classify(500, 551, None) is ErrorClass.USER_UNAVAILABLE


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_only_transient_and_rate_limited_are_retriable(error_class: ErrorClass) -> None:
    """SendError.retriable is true exactly for TRANSIENT and RATE_LIMITED."""
    err = SendError(error_class)
    assert err.retriable is (error_class in {ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED})


def test_error_values_are_lower_snake() -> None:
    """Error class values are lower_snake strings, usable as metric labels."""
    assert [c.value for c in ErrorClass] == [c.name.lower() for c in ErrorClass]


def test_send_error_text_names_the_facts() -> None:
    """The exception text carries class, HTTP status, codes, trace id and Meta's message."""
    err = SendError(
        ErrorClass.WINDOW_CLOSED,
        code=10,
        subcode=2534022,
        http_status=400,
        fbtrace_id="AbC",
        meta_message="(#10) This message is sent outside of allowed window.",
    )
    assert str(err) == (
        "window_closed http=400 code=10 subcode=2534022 fbtrace_id=AbC: "
        "(#10) This message is sent outside of allowed window."
    )


def test_code_label_is_known_code_or_other() -> None:
    """Metric labels use the code when the table knows it, else `other`."""
    assert [code_label(c) for c in (613, 190, 10, 424242, None)] == ["613", "190", "10", "other", "other"]
