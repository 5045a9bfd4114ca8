"""What the ledger keeps about one inbound event: the durable steps of its reply.

A reply moves through these steps, each written to the store before the next begins
(consumers/agent_replies/processor.py drives them; docs/agent.md has the table of faults):

``claimed`` -> ``chosen`` -> ``sending`` -> (part sent, next part ``sending``) -> ``done``

- ``claimed``: a worker holds the lease; nothing is decided yet.
- ``chosen``: the answer is decided and kept (text parts, buttons, handover), nothing is in
  flight: a resumed reply sends this answer, without asking the agent again.
- ``sending``: part number ``len(mids)`` was handed to the Send API at ``intent_at``. Whether Meta
  took it is open until its answer (the message id) comes back; a worker that finds this step
  after a crash or a lost answer looks for Meta's echo of the part before it sends anything.
- ``done``: the outcome is recorded with Meta's message ids; replays are skipped.

The lease (who works on the event, until when) is kept next to the entry, not in it: it is
renewed often and must not rewrite the answer each time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from consumers.send_api.model import QuickReply

__all__ = ["ECHO_TOKEN_PREFIX", "Answer", "Entry", "Step", "echo_token", "parse_echo_token", "text_fingerprint"]


class Step(StrEnum):
    CLAIMED = "claimed"
    CHOSEN = "chosen"
    SENDING = "sending"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Answer:
    """The agent's answer as it will be sent: text split into Meta's parts, buttons on the last."""

    parts: tuple[str, ...]
    quick_replies: tuple[QuickReply, ...] = ()
    handover: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "parts": list(self.parts),
            "quick_replies": [[b.title, b.payload] for b in self.quick_replies],
            "handover": self.handover,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(
            tuple(str(p) for p in data.get("parts", ())),
            tuple(QuickReply(str(t), str(p)) for t, p in data.get("quick_replies", ())),
            bool(data.get("handover")),
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One event's ledger entry, as read back from the store."""

    step: Step
    answer: Answer | None = None
    # Meta's message ids of the parts sent so far, in order: the next part is number len(mids).
    mids: tuple[str, ...] = ()
    # SENDING: when the part was handed to the Send API (the store's clock, seconds).
    intent_at: float = 0.0
    # SENDING: the mid of an echo that showed Meta accepted the part in flight.
    echoed: str | None = None
    # DONE: sent, skipped or failed.
    outcome: str | None = None

    @property
    def cursor(self) -> int:
        return len(self.mids)

    def data(self) -> bytes:
        """The part of the entry that changes only when the reply moves on (not with the lease)."""
        body: dict[str, Any] = {"m": list(self.mids)}
        if self.answer is not None:
            body["a"] = self.answer.to_json()
        if self.outcome is not None:
            body["o"] = self.outcome
        return orjson.dumps(body)

    @classmethod
    def load(cls, step: str, data: bytes | str | None, intent_ms: float = 0.0, echoed: str | None = None) -> Entry:
        body: dict[str, Any] = {}
        if data:
            try:
                loaded = orjson.loads(data)
            except orjson.JSONDecodeError:
                loaded = {}
            body = loaded if isinstance(loaded, dict) else {}
        answer = body.get("a")
        return cls(
            Step(step),
            Answer.from_json(answer) if isinstance(answer, dict) else None,
            tuple(str(m) for m in body.get("m", ())),
            intent_ms / 1000.0,
            echoed or None,
            str(body["o"]) if body.get("o") is not None else None,
        )


# Messenger passes the Send API's ``metadata`` back in the echo: it names the event and the part.
ECHO_TOKEN_PREFIX = "igw1:"  # noqa: S105 - a marker, not a credential


def echo_token(event_id: str, part: int) -> str:
    return f"{ECHO_TOKEN_PREFIX}{event_id}:{part}"


def parse_echo_token(metadata: str | None) -> tuple[str, int] | None:
    """(event id, part) from an echo's metadata written by :func:`echo_token`; None for anything else."""
    if not metadata or not metadata.startswith(ECHO_TOKEN_PREFIX):
        return None
    event_id, _, part = metadata[len(ECHO_TOKEN_PREFIX) :].rpartition(":")
    if not event_id or not part.isdigit():
        return None
    return event_id, int(part)


def text_fingerprint(text: str) -> str:
    """What an Instagram echo can be matched on: its text (Meta documents no metadata there)."""
    return hashlib.blake2b(text.strip().encode(), digest_size=8).hexdigest()
