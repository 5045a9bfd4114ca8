"""The traffic generator builds bodies as Meta serializes them, and predicts where each event lands."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from igw.normalize import normalize
from igw_tools.simulator import EVENT_KINDS, MIX_WEIGHTS, TrafficGenerator, meta_dumps, topic_for
from tests.plugins.payloads import read_payload

_TYPE_OF_KIND = {
    "message": "message",
    "quick_reply": "message",
    "attachment": "message",
    "story_mention": "message",
    "echo": "message_echo",
    "edit": "message_edit",
    "postback": "postback",
    "reaction": "reaction",
    "read": "read",
    "referral": "referral",
    "comment": "change",
    "delivery": "delivery",
}


def test_meta_dumps_escapes_like_meta() -> None:
    """Non-ASCII becomes lowercase \\uXXXX (surrogate pairs beyond the BMP) and '/' becomes '\\/'."""
    body = meta_dumps({"text": "äö 😊 https://x.y/z"})
    assert body == b'{"text":"\\u00e4\\u00f6 \\ud83d\\ude0a https:\\/\\/x.y\\/z"}'
    assert json.loads(body) == {"text": "äö 😊 https://x.y/z"}


@pytest.mark.parametrize("platform", ["instagram", "messenger"])
@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_kind_normalizes_to_its_type_and_topic(platform: str, kind: str) -> None:
    """The gateway's normalizer reads each generated kind as the expected type on the predicted topic."""
    generator = TrafficGenerator(platform=platform, seed=7)  # type: ignore[arg-type]
    simulated = generator.next(kind, batch=3)
    normalized = normalize(simulated.body, 1_764_000_000_000)
    assert normalized.dead_letter is None
    assert [e.type for e in normalized.events] == [_TYPE_OF_KIND[kind]] * 3
    assert {e.topic.value for e in normalized.events} == {topic_for(kind)}
    assert {e.envelope["platform"] for e in normalized.events} == {platform}
    assert {e.envelope["account_id"] for e in normalized.events} == {generator.account_id}
    assert simulated.body.isascii()


def test_mix_predicts_topic_counts_and_keeps_to_its_conversations() -> None:
    """A mixed batch lands exactly as topic_counts() says, among at most `conversations` users."""
    generator = TrafficGenerator(platform="instagram", account_id="17841499999999999", conversations=5, seed=1)
    landed: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    users: set[str] = set()
    kinds: Counter[str] = Counter()
    for _ in range(60):
        simulated = generator.next(batch=10)
        predicted.update(simulated.topic_counts())
        kinds.update(simulated.kinds)
        for event in normalize(simulated.body, 1_764_000_000_000).events:
            landed[event.topic.value] += 1
            if event.envelope.get("user_id"):
                users.add(event.envelope["user_id"])
    assert landed == predicted
    assert sum(landed.values()) == 600
    assert 1 <= len(users) <= 5
    assert set(kinds) <= set(MIX_WEIGHTS["instagram"])
    assert kinds["message"] > kinds["echo"] > kinds["edit"]


def test_ids_are_unique_and_seed_repeats() -> None:
    """Every generated event has its own id; the same seed and clock give the same bodies."""

    def clock() -> int:
        return 1_764_000_000_000

    a = TrafficGenerator(seed=3, clock_ms=clock)
    b = TrafficGenerator(seed=3, clock_ms=clock)
    bodies_a = [a.next(batch=5).body for _ in range(20)]
    assert bodies_a == [b.next(batch=5).body for _ in range(20)]
    ids = [e.id for body in bodies_a for e in normalize(body, 0).events]
    assert len(ids) == 100
    assert len(set(ids)) == 100


def test_unknown_kind_is_refused() -> None:
    """Asking for a kind the generator does not know names the known ones."""
    with pytest.raises(ValueError, match="known: message"):
        TrafficGenerator().next("typing")


def test_default_accounts_are_the_dev_stacks() -> None:
    """Simulated traffic goes to the accounts `igw dev` and its Graph API emulator know."""
    from igw_tools.devstack import DEV_INSTAGRAM_ACCOUNT, DEV_PAGE_ACCOUNT
    from igw_tools.simulator import DEFAULT_ACCOUNT_IDS

    assert DEFAULT_ACCOUNT_IDS == {"instagram": DEV_INSTAGRAM_ACCOUNT, "messenger": DEV_PAGE_ACCOUNT}


def _echo_app_ids(generator: TrafficGenerator, count: int) -> Counter[str]:
    app_ids: Counter[str] = Counter()
    for event in normalize(generator.next("echo", batch=count).body, 1_764_000_000_000).events:
        app_ids[str(event.envelope["message"]["app_id"])] += 1
    return app_ids


def test_echoes_carry_the_apps_id_and_a_small_share_a_persons() -> None:
    """Most echoes are of the agent's own replies (this app's id); about the configured share are a person's."""
    from igw_tools.simulator import DEFAULT_HUMAN_ECHO_SHARE, DEV_APP_ID, PERSON_APP_ID

    app_ids = _echo_app_ids(TrafficGenerator(seed=3), 2000)
    assert set(app_ids) == {DEV_APP_ID, PERSON_APP_ID}
    assert abs(app_ids[PERSON_APP_ID] / 2000 - DEFAULT_HUMAN_ECHO_SHARE) < 0.02
    assert _echo_app_ids(TrafficGenerator(seed=3, human_echo_share=0.0, app_id="555"), 200) == {"555": 200}
    assert _echo_app_ids(TrafficGenerator(seed=3, human_echo_share=1.0), 50) == {PERSON_APP_ID: 50}
    with pytest.raises(ValueError, match="between 0 and 1"):
        TrafficGenerator(human_echo_share=1.5)


def test_dashboard_test_is_metas_sample_for_the_local_account() -> None:
    """--dashboard-test's body is Meta's dashboard DM in changes form (timestamp a string of seconds), for the
    generator's account and stamped now: one message from the dashboard's user, the id of Meta's own sample."""
    generator = TrafficGenerator(account_id="17841400000000000", clock_ms=lambda: 1_764_000_000_500)
    simulated = generator.dashboard_test()
    body = json.loads(simulated.body)
    [entry] = body["entry"]
    [change] = entry["changes"]
    assert (body["object"], entry["id"], change["field"]) == ("instagram", "17841400000000000", "messages")
    assert change["value"]["timestamp"] == "1764000000"
    [event] = normalize(simulated.body, 1).events
    assert (event.type, event.topic.value, event.key) == ("message", "messages", "instagram:17841400000000000:12334")
    assert event.timestamp == 1_764_000_000_000
    assert simulated.topic_counts() == Counter({"messages": 1})
    [metas] = normalize(read_payload("instagram_dashboard_test_changes.json"), 1).events
    assert event.id == metas.id
