"""What a failed Send API call means, decided in one place.

Meta answers ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``; the
client turns every failure (those bodies, HTTP 429, 5xx, timeouts, broken connections) into one
:class:`SendError` whose :class:`ErrorClass` says what to do next. The table below is the only
place where Meta's codes are interpreted (docs/send-api.md explains each row).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["KNOWN_CODES", "RETRIABLE", "ErrorClass", "SendError", "classify", "code_label"]


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # retry with backoff
    RATE_LIMITED = "rate_limited"  # back off this account, retry
    WINDOW_CLOSED = "window_closed"  # outside the 24 h messaging window: do not retry
    USER_UNAVAILABLE = "user_unavailable"  # user not found, blocked the business, unavailable
    INVALID_MESSAGE = "invalid_message"  # the request itself is wrong: dead-letter
    TOKEN_INVALID = "token_invalid"  # noqa: S105 (a class name, not a secret). Stop sending with this token, alert
    ACCOUNT_BLOCKED = "account_blocked"  # the business account cannot send: pause it
    THREAD_OWNED = "thread_owned"  # another app owns the conversation: respect routing
    UNKNOWN = "unknown"


RETRIABLE: frozenset[ErrorClass] = frozenset({ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED})

# (code, subcode) pairs, checked before the code alone.
_BY_CODE_AND_SUBCODE: dict[tuple[int, int], ErrorClass] = {
    (10, 2534022): ErrorClass.WINDOW_CLOSED,  # Instagram
    (10, 2018278): ErrorClass.WINDOW_CLOSED,  # Messenger
    (100, 2534014): ErrorClass.USER_UNAVAILABLE,
    (200, 1545041): ErrorClass.USER_UNAVAILABLE,
    (100, 2534015): ErrorClass.INVALID_MESSAGE,
    (200, 2534041): ErrorClass.ACCOUNT_BLOCKED,
    (100, 2534029): ErrorClass.ACCOUNT_BLOCKED,
    (100, 2534037): ErrorClass.THREAD_OWNED,
}

_BY_CODE: dict[int, ErrorClass] = {
    1: ErrorClass.TRANSIENT,
    2: ErrorClass.TRANSIENT,
    4: ErrorClass.RATE_LIMITED,
    17: ErrorClass.RATE_LIMITED,
    32: ErrorClass.RATE_LIMITED,
    613: ErrorClass.RATE_LIMITED,
    80002: ErrorClass.RATE_LIMITED,
    80006: ErrorClass.RATE_LIMITED,
    551: ErrorClass.USER_UNAVAILABLE,
    190: ErrorClass.TOKEN_INVALID,  # whatever the subcode (459, 460, 463, 464, 467, 492)
    2018300: ErrorClass.THREAD_OWNED,
    # "Invalid parameter" with a subcode not listed above: the request is wrong, retrying repeats it.
    100: ErrorClass.INVALID_MESSAGE,
}

# Subcodes that decide the class whatever code carries them.
_BY_SUBCODE: dict[int, ErrorClass] = {
    2018300: ErrorClass.THREAD_OWNED,
}

KNOWN_CODES: frozenset[int] = frozenset({code for code, _ in _BY_CODE_AND_SUBCODE} | set(_BY_CODE) | {10, 200})


def classify(http_status: int | None, code: int | None, subcode: int | None) -> ErrorClass:
    """The class of one failure. ``http_status`` None means no answer (timeout, connection)."""
    if code is not None:
        if subcode is not None:
            if (code, subcode) in _BY_CODE_AND_SUBCODE:
                return _BY_CODE_AND_SUBCODE[(code, subcode)]
            if subcode in _BY_SUBCODE:
                return _BY_SUBCODE[subcode]
        if code in _BY_CODE:
            return _BY_CODE[code]
    # Meta does not document 429; treat it as rate limiting all the same.
    if http_status == 429:
        return ErrorClass.RATE_LIMITED
    if http_status is None or http_status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.UNKNOWN


def code_label(code: int | None) -> str:
    """A metric label for ``code``: the code itself when the table knows it, else ``other``."""
    return str(code) if code is not None and code in KNOWN_CODES else "other"


class SendError(Exception):
    """A Send API call that did not succeed (after any retries). Never carries the token."""

    def __init__(
        self,
        error_class: ErrorClass,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        fbtrace_id: str | None = None,
        meta_message: str = "",
        retry_after: float | None = None,
        attempts: int = 1,
        parts_sent: int = 0,
        ambiguous: bool = False,
    ) -> None:
        self.error_class = error_class
        self.code = code
        self.subcode = subcode
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.meta_message = meta_message
        self.retry_after = retry_after
        self.attempts = attempts
        self.parts_sent = parts_sent
        # True when Meta may have accepted the message all the same: no answer came back (a timeout,
        # a connection dropped after the request went out) or an answer that is not Meta's (a
        # proxy's 5xx). False when Meta answered with its error, or the request never left.
        self.ambiguous = ambiguous
        super().__init__(str(error_class))

    def __str__(self) -> str:
        # Built on demand: the client fills in attempts and retry_after after the exception exists.
        return self._describe()

    @property
    def retriable(self) -> bool:
        return self.error_class in RETRIABLE

    def _describe(self) -> str:
        parts = [str(self.error_class)]
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        if self.subcode is not None:
            parts.append(f"subcode={self.subcode}")
        if self.fbtrace_id:
            parts.append(f"fbtrace_id={self.fbtrace_id}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:.1f}s")
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        if self.ambiguous:
            parts.append("ambiguous")
        text = " ".join(parts)
        return f"{text}: {self.meta_message}" if self.meta_message else text
