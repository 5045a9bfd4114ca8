"""Each account's state between passes: one explicit state machine.

::

    READY ──pass completes──────────────▶ READY
      │  ──Meta throttles past the retries, or fails transiently──▶ BACKING_OFF (until) ──time──▶ READY
      │  ──token invalid, account blocked, no permission──────────▶ PAUSED (until)      ──time──▶ READY
      └──────────────────────────────────────────────────────────────────────────────────────────

A paused account is not read at all until its pause ends (an operator renews the token and
restarts, or the pause runs out), as the agent pauses sending; a backing-off account waits for
the time Meta asked for. Each pass over an account ends in one :class:`PassOutcome`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from consumers.send_api.errors import ErrorClass, SendError

__all__ = ["AccountState", "AccountStatus", "PassOutcome", "outcome_of"]


class AccountStatus(StrEnum):
    READY = "ready"
    BACKING_OFF = "backing_off"  # Meta throttled or failed: wait, then try again
    PAUSED = "paused"  # Meta refused the token or the account: an operator must act


class PassOutcome(StrEnum):
    COMPLETE = "complete"  # every conversation in the lookback was compared with Kafka
    THROTTLED = "throttled"  # Meta's rate limit outlasted the pass's retries
    PAUSED = "paused"  # the token or the account is refused (or still paused)
    FAILED = "failed"  # Meta kept failing, or Kafka did not take the recovered events
    SKIPPED = "skipped"  # backing off: not read this time


# Errors after which reading again with the same token is pointless.
_PAUSING = frozenset({ErrorClass.TOKEN_INVALID, ErrorClass.ACCOUNT_BLOCKED})


def outcome_of(err: SendError) -> PassOutcome:
    if err.error_class in _PAUSING:
        return PassOutcome.PAUSED
    if err.error_class is ErrorClass.RATE_LIMITED:
        return PassOutcome.THROTTLED
    return PassOutcome.FAILED


@dataclass(slots=True)
class AccountState:
    account_id: str
    status: AccountStatus = AccountStatus.READY
    until: float = 0.0  # wall-clock seconds; for BACKING_OFF and PAUSED
    reason: str = ""

    def due(self, now: float) -> bool:
        """Whether a pass may read this account now (a pause or back-off that ran out ends here)."""
        if self.status is not AccountStatus.READY and now >= self.until:
            self.status, self.until, self.reason = AccountStatus.READY, 0.0, ""
        return self.status is AccountStatus.READY

    def completed(self) -> None:
        self.status, self.until, self.reason = AccountStatus.READY, 0.0, ""

    def failed(self, err: SendError, now: float, *, pause_seconds: float, default_backoff: float) -> PassOutcome:
        """The pass over this account ended with ``err``: pause it or back off."""
        outcome = outcome_of(err)
        if outcome is PassOutcome.PAUSED:
            self.status, self.until = AccountStatus.PAUSED, now + pause_seconds
        else:
            self.status = AccountStatus.BACKING_OFF
            self.until = now + max(err.retry_after or 0.0, default_backoff)
        self.reason = str(err)
        return outcome
