"""Reconcile's pure core: Meta's Conversations API answers in, the webhook's envelopes out."""

from __future__ import annotations

import orjson
import pytest

from consumers.agent_replies.recovered import RecoveredVerdict, judge
from consumers.reconcile.accounts import AccountState, AccountStatus, PassOutcome
from consumers.reconcile.delivered import edit_to_hydrate
from consumers.reconcile.envelopes import Candidate, Source, find_inbound, recovered_event
from consumers.reconcile.history import (
    ApiMessage,
    graph_time_ms,
    parse_conversation_page,
    parse_message,
)
from consumers.send_api.errors import ErrorClass, SendError
from igw.normalize import event_id, normalize
from igw.schemas import load_envelope_schema
from tests.plugins.payloads import read_payload

ACCOUNT = "17841405822304914"
USER = "6284917503826471"


def api_message(
    mid: str,
    seconds: int,
    *,
    sender: str = USER,
    recipient: str = ACCOUNT,
    text: str | None = "hello",
    **extra: object,
) -> dict[str, object]:
    """A message as the Conversations API details it."""
    body: dict[str, object] = {
        "id": mid,
        "created_time": f"2025-11-25T12:00:{seconds:02d}+0000",
        "from": {"username": "someone", "id": sender},
        "to": {"data": [{"username": "biz", "id": recipient}]},
        "message": text or "",
    }
    body.update(extra)
    return body


@pytest.mark.parametrize(
    ("payload", "platform"),
    [("instagram_message_text.json", "instagram"), ("page_message_text.json", "messenger")],
)
def test_recovered_id_type_topic_and_key_equal_the_webhooks(payload: str, platform: str) -> None:
    """The webhook body through igw.normalize.normalize and the same message read from the API give one event id."""
    body = read_payload(payload)
    webhook = normalize(body, received_at=1764072003000).events[0]
    item = orjson.loads(body)["entry"][0]["messaging"][0]
    account = orjson.loads(body)["entry"][0]["id"]
    listed = {
        "id": item["message"]["mid"],
        "created_time": "2025-11-25T12:00:02+0000",
        "from": {"id": item["sender"]["id"]},
        "to": {"data": [{"id": account}]},
        "message": item["message"]["text"],
    }
    message = parse_message(listed)
    assert message is not None
    recovered = recovered_event(platform, account, Candidate(message, None), received_at=1764090000000)
    assert recovered is not None
    assert (recovered.id, recovered.type, recovered.topic, recovered.key) == (
        webhook.id,
        webhook.type,
        webhook.topic,
        webhook.key,
    )
    assert recovered.id == event_id(platform, account, "message", item)
    assert recovered.envelope["message"]["text"] == webhook.envelope["message"]["text"]
    assert recovered.envelope["recovered"] == {"source": "conversations_api", "at": 1764090000000, "answered_at": None}


def test_recovered_envelope_validates_against_the_schema() -> None:
    """A recovered envelope, attachments and all, is a valid envelope v1 with its recovered object."""
    import jsonschema

    message = parse_message(
        api_message(
            "aWdf_att",
            5,
            text=None,
            attachments={"data": [{"id": "1", "mime_type": "image/jpeg", "image_data": {"url": "https://x/i.jpg"}}]},
        )
    )
    assert message is not None
    event = recovered_event("instagram", ACCOUNT, Candidate(message, 1764072010000), received_at=1764072020000)
    assert event is not None
    assert event.envelope["message"]["attachments"] == [{"type": "image", "url": "https://x/i.jpg"}]
    jsonschema.Draft202012Validator(load_envelope_schema()).validate(event.envelope)
    bad = {**event.envelope, "recovered": {"source": "somewhere", "at": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(load_envelope_schema()).validate(bad)


def test_graph_times() -> None:
    """Meta's +0000 times, Z times and Unix seconds all read as milliseconds; rubbish is None."""
    assert graph_time_ms("2022-07-12T19:11:07+0000") == 1657653067000
    assert graph_time_ms("2022-07-12T19:11:07Z") == 1657653067000
    assert graph_time_ms(1657653067) == 1657653067000
    assert graph_time_ms("1657653067") == 1657653067000
    assert graph_time_ms("yesterday") is None
    assert graph_time_ms(None) is None


def test_conversation_page_reads_expanded_messages_and_the_cursor() -> None:
    """Conversations with their messages (newest first) and the next cursor; unreadable items are counted."""
    body = {
        "data": [
            {
                "id": "c1",
                "updated_time": "2025-11-25T12:00:09+0000",
                "participants": {"data": [{"id": USER}, {"id": ACCOUNT}]},
                "messages": {"data": [api_message("m2", 9), api_message("m1", 1), {"id": "no-time"}]},
            },
            {"id": "c2", "updated_time": "2025-11-25T11:00:00+0000"},
            {"no": "id"},
        ],
        "paging": {"cursors": {"after": "QVFI"}, "next": "https://graph.facebook.com/..."},
    }
    page = parse_conversation_page(body)
    assert [c.id for c in page.conversations] == ["c1", "c2"]
    first = page.conversations[0]
    assert first.messages is not None
    assert [m.id for m in first.messages] == ["m2", "m1"]
    assert first.participant_ids == (USER, ACCOUNT)
    assert page.conversations[1].messages is None
    assert page.after == "QVFI"
    assert page.skipped == 1
    assert parse_conversation_page({"data": [], "paging": {"cursors": {"after": "x"}}}).after is None


def test_find_inbound_marks_what_the_account_answered_after() -> None:
    """Each inbound message carries the time of the account's first message after it; beyond-20 ones are left out."""
    newest_first = tuple(
        m
        for m in (
            parse_message(api_message("in4", 40)),
            parse_message(api_message("out3", 30, sender=ACCOUNT, recipient=USER)),
            parse_message(api_message("out2", 25, sender=ACCOUNT, recipient=USER)),
            parse_message(api_message("in1", 10)),
            parse_message(api_message("in0", 1)),
            parse_message({"id": "old", "created_time": "2025-11-25T11:59:00+0000"}),
        )
        if m is not None
    )
    found = find_inbound(ACCOUNT, newest_first, since_ms=graph_time_ms("2025-11-25T12:00:05+0000") or 0, until_ms=2**62)
    assert [(c.message.id, c.answered_at) for c in found] == [
        ("in4", None),
        ("in1", graph_time_ms("2025-11-25T12:00:25+0000")),
    ]


def test_outbound_and_echo_like_messages_are_never_recovered() -> None:
    """Only what a user wrote becomes a candidate: the account's own messages never do."""
    message = ApiMessage("m", 1, ACCOUNT, (USER,), "from us")
    assert find_inbound(ACCOUNT, (message,), since_ms=0, until_ms=10) == []


def test_hydration_wants_only_new_messages_in_disguise() -> None:
    """A message_edit with num_edit 0 and no sender or text needs a lookup; a real edit does not."""
    webhook = orjson.loads(read_payload("instagram_message_edit.json"))
    item = webhook["entry"][0]["messaging"][0]
    edit_item = {"mid": "aWdf_new", "num_edit": 0}
    bare = {"recipient": item["recipient"], "timestamp": item["timestamp"], "message_edit": edit_item}
    body = orjson.dumps({"object": "instagram", "entry": [{"id": ACCOUNT, "time": 1, "messaging": [bare]}]})
    envelope = normalize(body, received_at=2).events[0].envelope
    edit = edit_to_hydrate(orjson.dumps(envelope))
    assert edit is not None
    assert (edit.mid, edit.account_id, edit.platform) == ("aWdf_new", ACCOUNT, "instagram")
    real = normalize(read_payload("instagram_message_edit.json"), received_at=2).events[0].envelope
    assert edit_to_hydrate(orjson.dumps(real)) is None
    complete_zero = {**real, "message_edit": {**real["message_edit"], "num_edit": 0}}
    assert edit_to_hydrate(orjson.dumps(complete_zero)) is None
    assert edit_to_hydrate(b"not json") is None


def test_hydrated_message_replaces_its_edit() -> None:
    """A hydrated message is the webhook's message event, marked message_lookup and naming the edit."""
    message = parse_message(api_message("aWdf_new", 3))
    assert message is not None
    event = recovered_event(
        "instagram", ACCOUNT, Candidate(message, None), received_at=5, source=Source.LOOKUP, replaces="e" * 32
    )
    assert event is not None
    expected = {"source": "message_lookup", "at": 5, "answered_at": None, "replaces": "e" * 32}
    assert event.envelope["recovered"] == expected
    assert event.envelope["sender_id"] == USER
    assert event.key == f"instagram:{ACCOUNT}:{USER}"


def test_account_states() -> None:
    """Token errors pause an account for the pause time; throttling backs it off; both end by themselves."""
    state = AccountState("a")
    token = SendError(ErrorClass.TOKEN_INVALID, code=190)
    assert state.failed(token, 100.0, pause_seconds=900, default_backoff=0) is PassOutcome.PAUSED
    assert state.status is AccountStatus.PAUSED
    assert not state.due(999.0)
    assert state.due(1000.0)
    assert state.status is AccountStatus.READY
    throttled = SendError(ErrorClass.RATE_LIMITED, code=80002, retry_after=30)
    assert state.failed(throttled, 0.0, pause_seconds=900, default_backoff=5) is PassOutcome.THROTTLED
    assert state.status is AccountStatus.BACKING_OFF
    assert state.until == 30
    assert not state.due(29)
    assert state.failed(SendError(ErrorClass.TRANSIENT), 0.0, pause_seconds=1, default_backoff=5) is PassOutcome.FAILED
    state.completed()
    assert state.status is AccountStatus.READY


def test_agent_verdict_for_recovered_messages() -> None:
    """The agent answers a recovered message in its window unless the account wrote after it."""
    now = 1_000_000.0
    ts = int(now * 1000) - 60_000
    assert judge({"type": "message"}, ts, now, 86400) is RecoveredVerdict.NOT_RECOVERED
    assert judge({"recovered": {"answered_at": None}}, ts, now, 86400) is RecoveredVerdict.ANSWER
    assert judge({"recovered": {"answered_at": ts + 5}}, ts, now, 86400) is RecoveredVerdict.ALREADY_ANSWERED
    assert judge({"recovered": {"answered_at": None}}, ts, now, 30) is RecoveredVerdict.WINDOW_CLOSED
