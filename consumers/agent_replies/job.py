"""One fetched record and where its reply stands: the data the reply state machine moves on.

consumers/agent_replies/processor.py is what moves it; :class:`Phase` names its steps there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from consumers.agent_replies.ledger import Answer
from consumers.agent_replies.model import InboundEvent
from consumers.agent_replies.outcomes import Outcome, Reason
from consumers.common.runner import Ticket

__all__ = ["Decision", "Job", "LedgerWrite", "Phase"]


class Phase(StrEnum):
    ADMIT = "admit"
    CHOOSE = "choose"
    SEND = "send"
    CONFIRM = "confirm"
    RECORD = "record"
    PUBLISH = "publish"
    DEADLETTER = "deadletter"
    WITNESS = "witness"
    FINISHED = "finished"


class LedgerWrite(StrEnum):
    """What ``RECORD`` writes to the ledger for a decision."""

    NONE = "none"  # nothing was claimed (filters, pauses, duplicates)
    FINISH = "finish"  # final: replays are skipped
    RELEASE = "release"  # not answered: a replay (from the dead-letter topic) may answer it


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: Reason
    ledger: LedgerWrite = LedgerWrite.NONE
    detail: str | None = None
    error_code: int | None = None
    deadletter: bool = False
    # Add the user's turn (and the reply's text) to the conversation's history.
    history: bool = False
    # Pause the conversation for a person after the reply.
    handover: bool = False


@dataclass(slots=True, eq=False)
class Job:
    """One fetched record, and where its reply stands. Lives until the record is finished."""

    event: InboundEvent
    ticket: Ticket
    value: bytes | None
    key: bytes | None
    source: tuple[str, int, int]
    phase: Phase = Phase.ADMIT
    # Later tries after the agent or Meta failed (IGW_AGENT_MAX_RETRIES), and unexpected errors in a row.
    attempts: int = 0
    errors: int = 0
    answer: Answer | None = None
    # Meta's message ids of the parts sent: these are never sent again.
    mids: list[str] = field(default_factory=list)
    # CONFIRM: the store's time after which, without an echo, the part is sent again.
    confirm_until: float = 0.0
    # The part being sent: its echo key, its Instagram index entry, an echo of it seen in this
    # process, and whether it is being sent again after no echo came.
    watch_key: str | None = None
    pending: str | None = None
    echoed: str | None = None
    resent: bool = False
    decision: Decision | None = None
    # RECORD's writes done so far (ledger, history, pause), so that a retry does not repeat them.
    recorded: int = 0
    deadletter_tries: int = 0
