"""The rules agent: matching order, the clinic sample, and config errors reported with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.agent_replies.model import InboundEvent
from consumers.agent_replies.rules import RulesAgent, RulesConfigError, load_rules
from consumers.agent_replies.settings import SAMPLE_RULES


def event(text: str | None = None, payload: str | None = None, type: str = "message") -> InboundEvent:
    return InboundEvent(
        id="e1", type=type, platform="instagram", account_id="a", user_id="u", conversation_id="instagram:a:u",
        timestamp_ms=0, text=text, payload=payload,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clinic() -> RulesAgent:
    return RulesAgent.from_file(SAMPLE_RULES)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("Are you OPEN on saturday?", "hours"),
        ("where are you located", "address"),
        ("I'd like to book an appointment", "book"),
        ("please cancel my appointment", "cancel"),
        ("I have a fever since yesterday, should I take ibuprofen?", "medical_question"),
        ("what is the right dosage for my kid", "medical_question"),
        ("Is it normal to feel tired after the vaccine", "medical_question"),
        ("hello!", "greeting"),
        ("can I talk to a person", "human"),
    ],
)
def test_clinic_text_rules(clinic: RulesAgent, text: str, rule: str) -> None:
    """Keyword and regex rules of the clinic sample match whole words, case-insensitively, first match wins."""
    matched = clinic.match(event(text))
    assert matched is not None
    assert matched.name == rule


async def test_payload_rules_come_first_and_fallback_answers_the_rest(clinic: RulesAgent) -> None:
    """A pressed button's payload wins over the text; unknown text gets the fallback; medical questions hand over."""
    booked = await clinic.reply(event("Dentist", payload="BOOK_DENTIST"), [])
    assert booked.handover
    assert booked.text is not None
    assert "reception" in booked.text
    postback = await clinic.reply(event("Opening hours", payload="HOURS", type="postback"), [])
    assert postback.text is not None
    assert "Monday to Friday" in postback.text
    fallback = await clinic.reply(event("qwerty zxcv"), [])
    assert fallback.text is not None
    assert "A person from our team" in fallback.text
    assert not fallback.handover
    medical = await clinic.reply(event("my chest pain is getting worse"), [])
    assert medical.handover
    assert medical.text is not None
    assert "112" in medical.text
    assert "cannot give medical advice" in medical.text


def test_json_twin_matches_the_yaml_sample() -> None:
    """samples/clinic.json holds the same rules as samples/clinic.yaml."""
    assert load_rules(SAMPLE_RULES.with_suffix(".json")).rules == load_rules(SAMPLE_RULES).rules


GOOD_RULE = "  - name: hi\n    keywords: [hi]\n    text: Hello\n"
LONG_TITLE = "    quick_replies:\n      - {title: This title is far too long, payload: P}\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("rules:\n" + GOOD_RULE + "  - name: bad\n    regex: '(x'\n    text: x\n", 6, "invalid regular expression"),
        ("rules:\n" + GOOD_RULE + "  - name: x\n    keyword: [a]\n    text: x\n", 6, "unknown key"),
        ("rules:\n" + GOOD_RULE + "  - name: x\n    keywords: [a]\n", 5, "needs a text"),
        ("rules:\n  - name: x\n    keywords: [a]\n    text: x\n" + LONG_TITLE, 6, "at most 20"),
        ("rules:\n" + GOOD_RULE + "  - name: hi\n    keywords: [b]\n    text: y\n", 5, "duplicate rule name"),
        ("rules:\n  - name: x\n    text: [unclosed\n", 4, "not valid YAML"),
        ("fallback:\n  text: x\n", 1, "missing"),
        ("rules:\n" + GOOD_RULE + "fallback:\n  handover: yes please\n", 6, "expected true or false"),
    ],
)  # fmt: skip
def test_yaml_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    """Every problem in a YAML rules file is reported as file:line (and column for syntax errors) with what is wrong."""
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesConfigError) as caught:
        load_rules(path)
    assert caught.value.line == line
    assert caught.value.variable == "IGW_RULES_FILE"
    location = f"{path}:{line}" if caught.value.column is None else f"{path}:{line}:{caught.value.column}"
    assert caught.value.problem.startswith(f"{location}: ")
    assert fragment in str(caught.value)


def test_yaml_syntax_errors_name_the_column(tmp_path: Path) -> None:
    """A YAML syntax error carries PyYAML's line and column."""
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: x\n    text: 'unclosed\n  - name: y\n", encoding="utf-8")
    with pytest.raises(RulesConfigError) as caught:
        load_rules(path)
    assert caught.value.problem.startswith(f"{path}:{caught.value.line}:{caught.value.column}: not valid YAML")


def test_json_errors_name_file_line_and_path(tmp_path: Path) -> None:
    """JSON syntax errors carry json's line and column; other JSON errors name the path of the bad value."""
    broken = tmp_path / "rules.json"
    broken.write_text('{"rules": [\n  {"name": "x", "text": "y",}\n]}\n', encoding="utf-8")
    with pytest.raises(RulesConfigError) as caught:
        load_rules(broken)
    assert caught.value.problem.startswith(f"{broken}:2:29: ")
    assert "not valid JSON" in str(caught.value)
    bad_regex = tmp_path / "regex.json"
    bad_regex.write_text('{"rules": [{"name": "x", "regex": "[", "text": "y"}]}', encoding="utf-8")
    with pytest.raises(RulesConfigError, match=r"rules\[0\]\.regex: invalid regular expression"):
        load_rules(bad_regex)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A rules file that cannot be read is a config error naming the file."""
    with pytest.raises(RulesConfigError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")
