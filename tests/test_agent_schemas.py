"""The agent's reply records follow reply-v1.json, and the tests' envelopes follow envelope v1."""

from __future__ import annotations

import time

import orjson
import pytest
from jsonschema import Draft202012Validator

from consumers.agent_replies.model import parse_event
from consumers.agent_replies.outcomes import Outcome, Reason, ReplyRecord
from consumers.agent_replies.schemas import load_reply_schema
from igw.schemas import load_envelope_schema
from tests.plugins.agent import envelope

REPLY = Draft202012Validator(load_reply_schema())
ENVELOPE = Draft202012Validator(load_envelope_schema())


def test_reply_schema_is_valid_and_knows_every_reason() -> None:
    """The schema is valid draft 2020-12 and lists exactly the outcomes and reasons the code has."""
    Draft202012Validator.check_schema(REPLY.schema)
    assert set(REPLY.schema["properties"]["reason"]["enum"]) == {str(r) for r in Reason}
    assert set(REPLY.schema["properties"]["outcome"]["enum"]) == {str(o) for o in Outcome}


@pytest.mark.parametrize(
    ("outcome", "reason", "message_ids"),
    [
        (Outcome.SENT, Reason.REPLIED, ("m_1",)),
        (Outcome.SENT, Reason.HANDOVER, ("m_1", "m_2")),
        (Outcome.SKIPPED, Reason.WINDOW_CLOSED, ()),
        (Outcome.FAILED, Reason.TOKEN_INVALID, ()),
    ],
)
def test_reply_records_validate(outcome: Outcome, reason: Reason, message_ids: tuple[str, ...]) -> None:
    """Reply records as the consumer builds them validate against reply-v1.json."""
    event = parse_event(orjson.dumps(envelope("u1", "hello")))
    body = ReplyRecord(event, outcome, reason, "rules", message_ids, detail="x", error_code=190).to_json(
        int(time.time() * 1000)
    )
    assert list(REPLY.iter_errors(body)) == []


def test_sent_without_message_ids_is_invalid() -> None:
    """A 'sent' record must name Meta's message ids."""
    event = parse_event(orjson.dumps(envelope("u1", "hello")))
    body = ReplyRecord(event, Outcome.SENT, Reason.REPLIED, "rules").to_json(int(time.time() * 1000))
    assert list(REPLY.iter_errors(body))


@pytest.mark.parametrize("kind", ["message", "postback", "message_echo"])
def test_test_envelopes_follow_envelope_v1(kind: str) -> None:
    """The envelopes the agent tests publish are valid envelope v1 records (docs/events.md)."""
    body = envelope("u1", "hello", type=kind, payload="BOOK" if kind == "postback" else None, app_id="1")
    assert list(ENVELOPE.iter_errors(body)) == []
