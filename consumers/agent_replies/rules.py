"""The ``rules`` agent: answers from a YAML or JSON file of keyword, regex and payload rules.

File format (``samples/clinic.yaml`` is a full example)::

    fallback:                # when nothing matches (optional; without it: no reply)
      text: A person from our team will answer here soon.
    rules:
      - name: hours          # for logs and the reply record
        payloads: [HOURS]    # quick-reply or postback payloads (exact match)
        keywords: [hours, open, opening]   # whole words, case-insensitive
        regex: "\\\\bsaturday\\\\b"        # Python regex, searched case-insensitively
        text: We are open Monday to Friday, 8:00-18:00.
        quick_replies:       # at most 13 buttons, titles at most 20 characters
          - {title: Book a visit, payload: BOOK}
        handover: false      # true: hand the conversation to a person (after sending text)

Payload rules are tried first (a pressed button says exactly what the user wants), then keyword and
regex rules in file order; the first match wins. Every error in the file is reported with the file
and line (YAML) or the path of the bad value (JSON, plus line and column for syntax errors).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.agent_replies.model import AgentReply, Button, InboundEvent, Turn
from igw.errors import SettingsError

__all__ = ["SAMPLE_RULES", "Rule", "RulesAgent", "RulesConfigError", "load_rules"]

# The sample that ships with the package, named in errors.
SAMPLE_RULES = Path(__file__).parent / "samples" / "clinic.yaml"
MAX_QUICK_REPLIES = 13
MAX_TITLE_CHARS = 20
MAX_PAYLOAD_CHARS = 1000


class RulesConfigError(SettingsError):
    """IGW_RULES_FILE cannot be used; ``problem`` starts with ``file:line[:column]:`` where known."""

    def __init__(self, path: Path, line: int | None, where: str, problem: str, *, column: int | None = None) -> None:
        location = str(path) if line is None else f"{path}:{line}" if column is None else f"{path}:{line}:{column}"
        super().__init__(
            "IGW_RULES_FILE",
            f"{location}: {where}: {problem}" if where else f"{location}: {problem}",
            f"fix the file there; the sample {SAMPLE_RULES} shows every field",
        )
        self.path = path
        self.line = line
        self.column = column
        self.where = where


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    reply: AgentReply
    payloads: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    _keyword_re: re.Pattern[str] | None = None

    def matches_text(self, text: str) -> bool:
        if self._keyword_re is not None and self._keyword_re.search(text):
            return True
        return self.pattern is not None and self.pattern.search(text) is not None


class _Located:
    """A YAML/JSON value and the line it starts on (None for JSON)."""

    __slots__ = ("line", "value")

    def __init__(self, value: Any, line: int | None) -> None:
        self.value = value
        self.line = line


def _load_yaml(path: Path, text: str) -> _Located:
    import yaml

    def located(node: yaml.Node) -> _Located:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            mapping: dict[str, _Located] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                if key in mapping:
                    raise RulesConfigError(path, key_node.start_mark.line + 1, str(key), "duplicate key")
                mapping[str(key)] = located(value_node)
            return _Located(mapping, line)
        if isinstance(node, yaml.SequenceNode):
            return _Located([located(item) for item in node.value], line)
        # Scalars: let PyYAML's safe constructor decide the type (int, bool, str, null).
        return _Located(yaml.SafeLoader(text).construct_object(node, deep=True), line)

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise RulesConfigError(path, line, "", f"not valid YAML: {exc.problem}", column=column) from None
    if root is None:
        raise RulesConfigError(path, 1, "", "the file is empty")
    return located(root)


def _load_json(path: Path, text: str) -> _Located:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RulesConfigError(path, exc.lineno, "", f"not valid JSON: {exc.msg}", column=exc.colno) from None

    def located(value: Any) -> _Located:
        if isinstance(value, dict):
            return _Located({str(k): located(v) for k, v in value.items()}, None)
        if isinstance(value, list):
            return _Located([located(v) for v in value], None)
        return _Located(value, None)

    return located(data)


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: _Located, where: str, problem: str) -> RulesConfigError:
        return RulesConfigError(self.path, node.line, where, problem)

    def mapping(self, node: _Located, where: str, allowed: frozenset[str]) -> dict[str, _Located]:
        if not isinstance(node.value, dict):
            raise self.fail(node, where, "expected a mapping")
        unknown = sorted(set(node.value) - allowed)
        if unknown:
            key = unknown[0]
            raise self.fail(
                node.value[key],
                f"{where}.{key}" if where else key,
                f"unknown key (known: {', '.join(sorted(allowed))})",
            )
        return node.value

    def string(self, node: _Located, where: str, *, max_chars: int | None = None) -> str:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(node, where, "expected text")
        text = str(value)
        if not text.strip():
            raise self.fail(node, where, "must not be empty")
        if max_chars is not None and len(text) > max_chars:
            raise self.fail(node, where, f"at most {max_chars} characters, got {len(text)}")
        return text

    def strings(self, node: _Located, where: str) -> list[str]:
        if isinstance(node.value, str):
            return [self.string(node, where)]
        if not isinstance(node.value, list):
            raise self.fail(node, where, "expected a list of text")
        return [self.string(item, f"{where}[{i}]") for i, item in enumerate(node.value)]

    def boolean(self, node: _Located, where: str) -> bool:
        if not isinstance(node.value, bool):
            raise self.fail(node, where, "expected true or false")
        return node.value

    def reply(self, fields: dict[str, _Located], node: _Located, where: str) -> AgentReply:
        text = self.string(fields["text"], f"{where}.text") if "text" in fields else None
        buttons: list[Button] = []
        if "quick_replies" in fields:
            qr_node = fields["quick_replies"]
            if not isinstance(qr_node.value, list):
                raise self.fail(qr_node, f"{where}.quick_replies", "expected a list of {title, payload}")
            if len(qr_node.value) > MAX_QUICK_REPLIES:
                raise self.fail(qr_node, f"{where}.quick_replies", f"at most {MAX_QUICK_REPLIES} buttons")
            for i, item in enumerate(qr_node.value):
                at = f"{where}.quick_replies[{i}]"
                button = self.mapping(item, at, frozenset({"title", "payload"}))
                for required in ("title", "payload"):
                    if required not in button:
                        raise self.fail(item, at, f"missing {required}")
                buttons.append(
                    Button(
                        title=self.string(button["title"], f"{at}.title", max_chars=MAX_TITLE_CHARS),
                        payload=self.string(button["payload"], f"{at}.payload", max_chars=MAX_PAYLOAD_CHARS),
                    )
                )
            if buttons and text is None:
                raise self.fail(qr_node, f"{where}.quick_replies", "buttons need a text to go with")
        handover = self.boolean(fields["handover"], f"{where}.handover") if "handover" in fields else False
        if text is None and not handover:
            raise self.fail(node, where, "needs a text, a handover: true, or both")
        return AgentReply(text=text, quick_replies=tuple(buttons), handover=handover)


_RULE_KEYS = frozenset({"name", "payloads", "keywords", "regex", "text", "quick_replies", "handover"})
_REPLY_KEYS = frozenset({"text", "quick_replies", "handover"})


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    fallback: AgentReply | None
    path: Path


def load_rules(path: Path | str) -> RuleSet:
    """Read and check a rules file (``.yaml``/``.yml`` or ``.json``); :class:`RulesConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesConfigError(path, None, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RulesConfigError(path, None, "", "not UTF-8 text") from None
    root = _load_json(path, text) if path.suffix.lower() == ".json" else _load_yaml(path, text)
    reader = _Reader(path)
    top = reader.mapping(root, "", frozenset({"rules", "fallback", "version"}))
    if "version" in top and top["version"].value != 1:
        raise reader.fail(top["version"], "version", "only version 1 is known")
    rules: list[Rule] = []
    names: set[str] = set()
    rules_node = top.get("rules")
    if rules_node is None:
        raise reader.fail(root, "rules", "missing: the file needs a list of rules")
    if not isinstance(rules_node.value, list):
        raise reader.fail(rules_node, "rules", "expected a list of rules")
    for index, node in enumerate(rules_node.value):
        where = f"rules[{index}]"
        fields = reader.mapping(node, where, _RULE_KEYS)
        name = reader.string(fields["name"], f"{where}.name") if "name" in fields else f"rule{index + 1}"
        if name in names:
            raise reader.fail(fields.get("name", node), f"{where}.name", f"duplicate rule name {name!r}")
        names.add(name)
        payloads = (
            frozenset(reader.strings(fields["payloads"], f"{where}.payloads")) if "payloads" in fields else frozenset()
        )
        keywords = (
            tuple(k.casefold() for k in reader.strings(fields["keywords"], f"{where}.keywords"))
            if "keywords" in fields
            else ()
        )
        pattern = None
        if "regex" in fields:
            source = reader.string(fields["regex"], f"{where}.regex")
            try:
                pattern = re.compile(source, re.IGNORECASE)
            except re.error as exc:
                raise reader.fail(fields["regex"], f"{where}.regex", f"invalid regular expression: {exc}") from None
        if not payloads and not keywords and pattern is None:
            raise reader.fail(node, where, "needs payloads, keywords or regex to match on")
        keyword_re = None
        if keywords:
            alternatives = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
            keyword_re = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
        reply = reader.reply({k: v for k, v in fields.items() if k in _REPLY_KEYS}, node, where)
        rules.append(Rule(name, reply, payloads, keywords, pattern, keyword_re))
    fallback = None
    if "fallback" in top:
        fields = reader.mapping(top["fallback"], "fallback", _REPLY_KEYS)
        fallback = reader.reply(fields, top["fallback"], "fallback")
    return RuleSet(tuple(rules), fallback, path)


class RulesAgent:
    """Answers with the first matching rule, else the fallback, else nothing."""

    name = "rules"
    uses_history = False

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    @classmethod
    def from_file(cls, path: Path | str) -> RulesAgent:
        return cls(load_rules(path))

    def match(self, event: InboundEvent) -> Rule | None:
        if event.payload:
            for rule in self.rules.rules:
                if event.payload in rule.payloads:
                    return rule
        text = event.text or event.title or ""
        if text:
            for rule in self.rules.rules:
                if rule.matches_text(text):
                    return rule
        return None

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        rule = self.match(event)
        if rule is not None:
            return rule.reply
        return self.rules.fallback or AgentReply()

    async def close(self) -> None:
        return None
