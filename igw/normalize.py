"""Meta's webhook bodies into envelope v1 events (docs/events.md).

Pure: ``normalize(body, received_at)`` does no I/O, so it can be fuzzed and timed alone. It never
raises on input: what cannot be read becomes a dead letter, what is merely unfamiliar becomes an
``unknown`` event that keeps the raw item. One event is one envelope in whatever form Meta delivers
it (``messaging[]``, ``standby[]``, a messaging field in ``changes[]``; numbers or numeric strings;
older key names), and ``event_id`` is the one rule that names it, for other modules too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from igw.envelope import ENVELOPE_VERSION, TOPIC_OF, Topic

__all__ = [
    "MESSAGING_FIELDS",
    "DeadLetter",
    "Event",
    "Normalized",
    "Topic",
    "event_id",
    "normalize",
    "normalize_document",
    "normalize_item",
]


class Event(NamedTuple):
    """One normalized item. A named tuple: built once per event on the hot path, and cheap to build."""

    id: str
    type: str
    topic: Topic
    key: str
    timestamp: int
    source: str
    subject: str | None
    envelope: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    paths: tuple[str, ...] = ()


class Normalized(NamedTuple):
    events: list[Event]
    dead_letter: DeadLetter | None = None


_PLATFORMS: Final = {"instagram": "instagram", "page": "messenger"}
_HANDOVER_KEYS: Final = ("pass_thread_control", "take_thread_control", "request_thread_control", "app_roles")
# Keys whose object becomes the event type under the same name; checked in this order.
_PLAIN_KEYS: Final = (
    "reaction",
    "read",
    "delivery",
    "referral",
    "optin",
    "policy_enforcement",
    "response_feedback",
    "account_linking",
    "messaging_feedback",
    "order",
)
# Older spellings Meta has used for an item's key, and the key they mean (docs/events.md, "Variants").
_LEGACY_KEYS: Final = {"policy-enforcement": "policy_enforcement"}
# Webhook fields whose `changes` value is a messaging item (Messenger's and Instagram's field lists):
# such a change is the same event as the item in `messaging[]`, so it is normalized as that item.
# Every other field (comments, live_comments, mentions, story_insights, feed, ...) is account-level.
MESSAGING_FIELDS: Final = frozenset(
    (
        "messages",
        "message_echoes",
        "message_deliveries",
        "message_reads",
        "messaging_seen",
        "message_reactions",
        "message_edit",
        "message_edits",
        "messaging_postbacks",
        "messaging_referral",
        "messaging_referrals",
        "messaging_optins",
        "messaging_handover",
        "messaging_handovers",
        "messaging_policy_enforcement",
        "messaging_account_linking",
        "messaging_feedback",
        "response_feedback",
        "messaging_game_plays",
        "send_cart",
        "standby",
    )
)
_EVENTS: Final = Topic.EVENTS  # every type not in TOPIC_OF
# Meta's messaging timestamps are ms; `changes` examples use seconds. Anything below this is seconds.
_SECONDS_LIMIT: Final = 100_000_000_000
_INT64: Final = 2**63  # Kafka's record timestamp and the envelope's are signed 64-bit
_DIGITS_MAX: Final = 19  # a numeric string longer than this is past 64 bits (and int() of it is not free)
_ITEM_LISTS: Final = ("messaging", "standby", "changes")
# Ids an attachment's payload carries (numbers in some deliveries, strings in others); the envelope
# gives each as a string.
_ATTACHMENT_IDS: Final = ("id", "sticker_id", "reel_video_id", "ig_post_media_id", "booking_id")
# Types whose id is Meta's message id (docs/events.md, "Ids"), and the item key holding that mid.
_MID_NAMED: Final = {
    "message": "message",
    "message_echo": "message",
    "message_deleted": "message",
    "postback": "postback",
}
_SIMPLE_ENTRY: Final = frozenset(("id", "time", "messaging"))
# Event ids are BLAKE2b-128 hex digests; copying an empty state is cheaper than the constructor's keywords.
_ID_HASH: Final = hashlib.blake2b(digest_size=16)
_loads: Final = orjson.loads
# ``Event(...)`` runs a Python-level ``__new__``; ``tuple.__new__`` builds the same object in C.
_tuple_new: Final = tuple.__new__


def normalize(body: bytes, received_at: int) -> Normalized:
    """Parse a signed webhook body and normalize every item in it."""
    try:
        document = _loads(body)
    except orjson.JSONDecodeError as exc:
        return Normalized([], DeadLetter("not_json", f"body is not JSON: {exc.msg}"))
    return normalize_document(document, received_at)


def normalize_document(document: Any, received_at: int) -> Normalized:
    if not isinstance(document, dict):
        return Normalized([], DeadLetter("not_object", "body is not a JSON object"))
    obj = document.get("object")
    if obj is None:
        return Normalized([], DeadLetter("no_object", "body has no 'object' field"))
    platform = _PLATFORMS.get(obj) if isinstance(obj, str) else None
    if platform is None:
        return Normalized([], DeadLetter("unsupported_object", "'object' is not 'instagram' or 'page'"))
    entries = document.get("entry")
    if not isinstance(entries, list):
        return Normalized([], DeadLetter("bad_entry", "'entry' is not a list", ("entry",)))
    if len(entries) == 1:
        # The common delivery, one entry with one messaging item, without the general loop's
        # bookkeeping. Taken only where _normalize_entries would do exactly this (the test
        # suite checks the two against each other); anything else falls through to it.
        entry = entries[0]
        if type(entry) is dict and entry.keys() == _SIMPLE_ENTRY:
            account_id = entry["id"]
            items = entry["messaging"]
            if type(account_id) is str and account_id and type(items) is list and len(items) == 1:
                item = items[0]
                if type(item) is dict:
                    entry_time = entry["time"]
                    if type(entry_time) is not int or not _SECONDS_LIMIT <= entry_time < _INT64:  # else ms, as _as_ms
                        entry_time = _as_ms(entry_time)
                    source = f"igw/{platform}/{account_id}"
                    event = _messaging_event(platform, account_id, source, entry_time, item, False, received_at)
                    return _tuple_new(Normalized, ([event], None))
    return _normalize_entries(platform, entries, received_at)


def _normalize_entries(platform: str, entries: list[Any], received_at: int) -> Normalized:
    events: list[Event] = []
    append = events.append
    bad: list[str] = []
    reason = ""
    for e_index, entry in enumerate(entries):
        account_id = _as_id(entry.get("id")) if isinstance(entry, dict) else None
        if account_id is None:
            bad.append(f"entry[{e_index}]")
            reason = reason or "bad_entry"
            continue
        entry_time = _as_ms(entry.get("time"))
        source = f"igw/{platform}/{account_id}"  # once per entry, not once per event
        for list_key in _ITEM_LISTS:
            items = entry.get(list_key)
            if items is None:
                continue
            if not isinstance(items, list):
                bad.append(f"entry[{e_index}].{list_key}")
                reason = reason or "bad_entry"
                continue
            changes = list_key == "changes"
            standby = list_key == "standby"
            for i_index, item in enumerate(items):
                if not isinstance(item, dict):
                    bad.append(f"entry[{e_index}].{list_key}[{i_index}]")
                    reason = reason or "bad_item"
                elif changes:
                    append(_change_or_item(platform, account_id, source, entry_time, item, received_at))
                else:
                    append(_messaging_event(platform, account_id, source, entry_time, item, standby, received_at))
        if "field" in entry and "value" in entry:
            # The bare form some Instagram examples use: one change directly on the entry.
            bare = {"field": entry["field"], "value": entry["value"]}
            append(_change_or_item(platform, account_id, source, entry_time, bare, received_at))
    dead = None
    if bad:
        detail = f"{len(bad)} unreadable entr{'y' if len(bad) == 1 else 'ies or items'}"
        dead = DeadLetter(reason, detail, tuple(bad[:50]))
    return _tuple_new(Normalized, (events, dead))


def _as_id(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _as_ms(value: Any) -> int | None:
    """A time as Meta means it, in ms: a number or a numeric string ("1527459824"), seconds below
    _SECONDS_LIMIT and ms from there; None for anything else."""
    if type(value) is int:
        ms = value
    elif type(value) is float:
        if not 0 <= value < _INT64:  # also NaN and infinities, which orjson never yields but dicts may hold
            return None
        ms = int(value)
    elif type(value) is str and 0 < len(value) <= _DIGITS_MAX and value.isascii() and value.isdigit():
        ms = int(value)
    else:
        return None
    # Negative, or past 64 bits (1e20 is valid JSON): no time, and nothing the envelope's
    # non-negative 64-bit timestamp can hold.
    if not 0 <= ms < _INT64:
        return None
    return ms * 1000 if ms < _SECONDS_LIMIT else ms


def _integer(value: Any) -> Any:
    """A count or a watermark as a number: a numeric string becomes its integer; anything else stays as Meta sent it."""
    if type(value) is str and 0 < len(value) <= _DIGITS_MAX and value.isascii() and value.isdigit():
        return int(value)
    return value


def _id_string(value: Any) -> Any:
    """An id as a string: Meta sends some ids as numbers, others as strings; anything else stays as sent."""
    return str(value) if type(value) is int else value


def _digest(basis: bytes) -> str:
    digest = _ID_HASH.copy()
    digest.update(basis)
    return digest.hexdigest()


def _mid_id(type_: str, named_by: str) -> str:
    """The id of an event that Meta's message id names. Inlined in _messaging_event (the hot path)."""
    return _digest(f"{type_}\x1f{named_by}".encode())


def _canonical_item(item: dict[str, Any]) -> dict[str, Any]:
    """The item as the `messaging[]` form gives it, so both forms of one event hash alike: the
    timestamp in ms, party ids as strings, legacy keys under their current name. The item itself
    when it is already so (every `messaging[]` item Meta documents), else a shallow copy."""
    fixed: dict[str, Any] | None = None
    timestamp = item.get("timestamp")
    if timestamp is not None and type(timestamp) is not int:
        ms = _as_ms(timestamp)
        if ms is not None:
            fixed = dict(item)
            fixed["timestamp"] = ms
    elif type(timestamp) is int and 0 <= timestamp < _SECONDS_LIMIT:
        fixed = dict(item)
        fixed["timestamp"] = timestamp * 1000
    for key in ("sender", "recipient"):
        party = item.get(key)
        if type(party) is dict and type(party.get("id")) is int:
            fixed = fixed if fixed is not None else dict(item)
            fixed[key] = {**party, "id": str(party["id"])}
    for legacy, current in _LEGACY_KEYS.items():
        if legacy in item and current not in item:
            fixed = fixed if fixed is not None else dict(item)
            fixed[current] = fixed.pop(legacy)
    return fixed if fixed is not None else item


def _canonical_id(platform: str, account_id: str, type_: str, item: dict[str, Any]) -> str:
    try:
        canonical = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # pragma: no cover - parsed JSON always serializes
        canonical = repr(sorted(item.items())).encode()
    return _digest(f"{platform}\x1f{account_id}\x1f{type_}\x1f".encode() + canonical)


def _edit_name(edit: dict[str, Any]) -> str | None:
    """What names a message_edit: its mid and the edit's number (a numeric string counts as that number)."""
    mid = edit.get("mid")
    return f"{mid}\x1f{_integer(edit.get('num_edit'))}" if type(mid) is str and mid else None


def event_id(platform: str, account_id: str, type_: str, item: Mapping[str, Any]) -> str:
    """The envelope id of the event of type ``type_`` that ``item`` is: the one rule for event ids.

    ``item`` is a messaging item as Meta sends it (``sender``, ``recipient``, ``timestamp`` and the
    type's object: ``message``, ``postback``, ``message_edit``, ``reaction``, ...), from ``messaging[]``,
    ``standby[]`` or the ``value`` of a ``changes`` item; ``platform`` is ``instagram`` or ``messenger``
    and ``account_id`` the entry's id. Where Meta's message id names the event (``message``,
    ``message_echo``, ``message_deleted``, ``postback``; ``message_edit`` adds ``num_edit``) the id is
    BLAKE2b-128 over the type and the mid, so any delivery of that message, in any form, or rebuilt
    from the Conversations API, has this id. Otherwise it is BLAKE2b-128 over the platform, the
    account, the type and the item's canonical JSON (keys sorted; timestamp in ms, party ids as
    strings, legacy keys renamed). For an account-level ``change``, ``item`` is ``{"field", "value"}``.
    """
    item = item if type(item) is dict else dict(item)
    if type_ == "message_edit":
        edit = item.get("message_edit")
        named_by = _edit_name(edit) if type(edit) is dict else None
        if named_by is not None:
            return _mid_id(type_, named_by)
    else:
        key = _MID_NAMED.get(type_)
        obj = item.get(key) if key is not None else None
        mid = obj.get("mid") if type(obj) is dict else None
        if type(mid) is str and mid:
            return _mid_id(type_, mid)
    if type_ == "change":
        return _canonical_id(platform, account_id, type_, item)
    return _canonical_id(platform, account_id, type_, _canonical_item(item))


def _party(party: Any) -> str | None:
    """The id of a ``{"id": ...}`` party object, or None."""
    if type(party) is not dict:
        return None
    value = party.get("id")
    return (value or None) if type(value) is str else _as_id(value)


def _attachments(raw_attachments: list[Any], sticker_id: Any) -> list[dict[str, Any]]:
    """Each attachment as ``type``, ``url`` and (when Meta gives them) ``title`` and the ids its payload carries."""
    attachments: list[dict[str, Any]] = []
    for attachment in raw_attachments:
        if not isinstance(attachment, dict):
            continue
        payload = attachment.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        # Messenger's `fallback` attachments carry url and title beside an empty payload; older ones
        # spell it `URL`.
        url = payload.get("url")
        if url is None:
            url = attachment.get("url", attachment.get("URL"))
        out: dict[str, Any] = {"type": attachment.get("type"), "url": url}
        title = payload.get("title", attachment.get("title"))
        if title is not None:
            out["title"] = title
        for extra in _ATTACHMENT_IDS:
            if extra in payload:
                out[extra] = _id_string(payload[extra])
        if sticker_id is not None and "sticker_id" not in out:
            # A sticker named at the message level only (older Messenger deliveries).
            out["sticker_id"] = _id_string(sticker_id)
        attachments.append(out)
    return attachments


def _classify(item: dict[str, Any]) -> tuple[str, str, dict[str, Any], str | None]:
    """(type, object name, type object, the mid that names this event or None) of an item without a message."""
    edit = item.get("message_edit")
    if isinstance(edit, dict):
        obj = {"mid": edit.get("mid"), "text": edit.get("text"), "num_edit": _integer(edit.get("num_edit"))}
        return "message_edit", "message_edit", obj, _edit_name(edit)
    postback = item.get("postback")
    if isinstance(postback, dict):
        obj = {
            "mid": postback.get("mid"),
            "title": postback.get("title"),
            "payload": postback.get("payload"),
            "referral": postback.get("referral"),
        }
        mid = postback.get("mid")
        return "postback", "postback", obj, mid if isinstance(mid, str) and mid else None
    for key in _PLAIN_KEYS:
        value = item.get(key)
        if isinstance(value, dict):
            return key, key, _plain_object(key, value), None
    for key in _HANDOVER_KEYS:
        value = item.get(key)
        if isinstance(value, dict):
            return "handover", "handover", {"kind": key, **value}, None
    for legacy, key in _LEGACY_KEYS.items():
        value = item.get(legacy)
        if isinstance(value, dict):
            return key, key, _plain_object(key, value), None
    return "unknown", "unknown", {"keys": sorted(item)}, None


def _plain_object(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """The type object of a plain key: the documented fields for reactions, reads and deliveries
    (watermarks as numbers), Meta's object itself for the others."""
    if key == "reaction":
        return {
            "mid": value.get("mid"),
            "action": value.get("action"),
            "reaction": value.get("reaction"),
            "emoji": value.get("emoji"),
        }
    if key == "read":
        return {"mid": value.get("mid"), "watermark": _integer(value.get("watermark"))}
    if key == "delivery":
        return {"mids": value.get("mids"), "watermark": _integer(value.get("watermark"))}
    return value


def _messaging_event(
    platform: str,
    account_id: str,
    source: str,
    entry_time: int | None,
    item: dict[str, Any],
    standby: bool,
    received_at: int,
) -> Event:
    get = item.get
    message = get("message")
    # Messages first, and inline (no helper calls): they are nearly every event the gateway sees.
    if isinstance(message, dict):
        mget = message.get
        if mget("is_deleted"):
            type_ = "message_deleted"
        elif mget("is_echo"):
            type_ = "message_echo"
        else:
            type_ = "message"
        object_name = "message"
        mid = mget("mid")
        raw_attachments = mget("attachments")
        quick_reply = mget("quick_reply")
        app_id = mget("app_id")
        if app_id is not None and type(app_id) is int:  # an id: a string, whatever Meta sent
            app_id = str(app_id)
        type_object = {
            "mid": mid,
            "text": mget("text"),
            "attachments": _attachments(raw_attachments, mget("sticker_id"))
            if isinstance(raw_attachments, list)
            else [],
            "quick_reply_payload": quick_reply.get("payload") if isinstance(quick_reply, dict) else None,
            "reply_to": mget("reply_to"),
            "referral": mget("referral"),
            "is_unsupported": bool(mget("is_unsupported", False)),
            "app_id": app_id,
            "metadata": mget("metadata"),
        }
        named_by = mid if isinstance(mid, str) and mid else None
    else:
        type_, object_name, type_object, named_by = _classify(item)
    # Parties as _party reads them, its common case (a non-empty string id) inline.
    party = get("sender")
    sender_id = party.get("id") if type(party) is dict else None
    if type(sender_id) is not str or not sender_id:
        sender_id = _party(party)
    party = get("recipient")
    recipient_id = party.get("id") if type(party) is dict else None
    if type(recipient_id) is not str or not recipient_id:
        recipient_id = _party(party)
    # An echo's other party is its recipient; the account itself is nobody's conversation (an
    # Instagram self-test echo names the account on both sides).
    user_id = recipient_id if type_ == "message_echo" else sender_id
    if user_id == account_id:
        user_id = None
    # The id as event_id() gives it; _mid_id inline, since nearly every event is named by its mid.
    if named_by is not None:
        digest = _ID_HASH.copy()
        digest.update(f"{type_}\x1f{named_by}".encode())
        id_ = digest.hexdigest()
    else:
        id_ = _canonical_id(platform, account_id, type_, _canonical_item(item))
    timestamp = get("timestamp")
    if type(timestamp) is not int or not _SECONDS_LIMIT <= timestamp < _INT64:  # else ms, as _as_ms says
        timestamp = _as_ms(timestamp) or entry_time or received_at
    conversation_id = None
    if user_id is not None and sender_id is not None and recipient_id is not None:
        # A DM names both parties: one dict display, with the keys in the order _event gives them.
        conversation_id = f"{platform}:{account_id}:{user_id}"
        envelope: dict[str, Any] = {
            "v": ENVELOPE_VERSION,
            "id": id_,
            "type": type_,
            "platform": platform,
            "account_id": account_id,
            "user_id": user_id,
            "sender_id": sender_id,
            "recipient_id": recipient_id,
            "conversation_id": conversation_id,
            "timestamp": timestamp,
            "received_at": received_at,
            "standby": standby,
            object_name: type_object,
            "raw": item,
        }
        return _tuple_new(
            Event,
            (
                id_,
                type_,
                TOPIC_OF.get(type_, _EVENTS),
                conversation_id,
                timestamp,
                source,
                conversation_id,
                envelope,
            ),
        )
    return _event(
        id_,
        type_,
        platform,
        account_id,
        source,
        user_id,
        sender_id,
        recipient_id,
        timestamp,
        received_at,
        standby,
        object_name,
        type_object,
        item,
    )


def _change_or_item(
    platform: str, account_id: str, source: str, entry_time: int | None, item: dict[str, Any], received_at: int
) -> Event:
    """A ``changes`` item: the messaging item it carries when its field is a messaging field (the
    same event, id and all, as in ``messaging[]``), else an account-level ``change``."""
    value = item.get("value")
    field = item.get("field")
    if type(value) is dict and type(field) is str and field in MESSAGING_FIELDS:
        return _messaging_event(platform, account_id, source, entry_time, value, field == "standby", received_at)
    return _change_event(platform, account_id, source, entry_time, item, received_at)


def _change_event(
    platform: str, account_id: str, source: str, entry_time: int | None, item: dict[str, Any], received_at: int
) -> Event:
    value = item.get("value")
    sender_id: str | None = None
    timestamp: int | None = None
    if isinstance(value, dict):
        sender_id = _party(value.get("from"))
        # A Page's `feed` and `leadgen` changes give their time as created_time (seconds).
        timestamp = _as_ms(value.get("timestamp")) or _as_ms(value.get("created_time"))
    change = {"field": item.get("field"), "value": value}
    id_ = _canonical_id(platform, account_id, "change", item)
    return _event(
        id_,
        "change",
        platform,
        account_id,
        source,
        sender_id if sender_id != account_id else None,  # the account's own post or reply is nobody's conversation
        sender_id,
        None,
        timestamp or entry_time or received_at,
        received_at,
        False,
        "change",
        change,
        item,
    )


def _event(
    id_: str,
    type_: str,
    platform: str,
    account_id: str,
    source: str,
    user_id: str | None,
    sender_id: str | None,
    recipient_id: str | None,
    timestamp: int,
    received_at: int,
    standby: bool,
    object_name: str,
    type_object: dict[str, Any],
    raw: dict[str, Any],
) -> Event:
    envelope: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": id_,
        "type": type_,
        "platform": platform,
        "account_id": account_id,
    }
    conversation_id = None
    if user_id is not None:
        conversation_id = f"{platform}:{account_id}:{user_id}"
        envelope["user_id"] = user_id
    if sender_id is not None:
        envelope["sender_id"] = sender_id
    if recipient_id is not None:
        envelope["recipient_id"] = recipient_id
    if conversation_id is not None:
        envelope["conversation_id"] = conversation_id
    envelope["timestamp"] = timestamp
    envelope["received_at"] = received_at
    envelope["standby"] = standby
    envelope[object_name] = type_object
    envelope["raw"] = raw
    return _tuple_new(
        Event,
        (
            id_,
            type_,
            TOPIC_OF.get(type_, _EVENTS),
            conversation_id or account_id,
            timestamp,
            source,
            conversation_id,
            envelope,
        ),
    )


def normalize_item(
    platform: str, account_id: str, item: dict[str, Any], received_at: int, *, standby: bool = False
) -> Event:
    """The event one messaging item is, as the gateway would publish it: for a module that rebuilds
    events from elsewhere (the Conversations API) and needs the envelope, key and id a webhook
    delivery of the same item gets. ``platform`` is ``instagram`` or ``messenger``."""
    return _messaging_event(platform, account_id, f"igw/{platform}/{account_id}", None, item, standby, received_at)
