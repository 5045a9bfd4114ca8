"""Splitting long replies into parts that fit Meta's text limits, at natural boundaries."""

from __future__ import annotations

import re
import unicodedata

from consumers.send_api.model import Flavour

__all__ = ["IG_IG_MAX_TEXT_BYTES", "PAGE_MAX_TEXT_CHARS", "fits", "split_text"]

# Instagram Login counts UTF-8 bytes; the Messenger Platform counts characters.
IG_IG_MAX_TEXT_BYTES = 1000
PAGE_MAX_TEXT_CHARS = 2000

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*\s+")
_SPACE = re.compile(r"\s+")
# Characters that belong to the one before them: cutting before them breaks a glyph.
_JOINERS = frozenset("\u200d\ufe0e\ufe0f") | {chr(c) for c in range(0x1F3FB, 0x1F400)}


def fits(text: str, flavour: Flavour) -> bool:
    if flavour is Flavour.IG_IG:
        return len(text.encode("utf-8")) <= IG_IG_MAX_TEXT_BYTES
    return len(text) <= PAGE_MAX_TEXT_CHARS


def _largest_prefix(text: str, flavour: Flavour) -> str:
    if flavour is Flavour.IG_IG:
        # Cutting the bytes may split a character; decoding with "ignore" drops the broken tail.
        return text.encode("utf-8")[:IG_IG_MAX_TEXT_BYTES].decode("utf-8", "ignore")
    return text[:PAGE_MAX_TEXT_CHARS]


def _last_end(pattern: re.Pattern[str], text: str) -> int:
    end = -1
    for match in pattern.finditer(text):
        end = match.start() if pattern is _SPACE else match.end()
    return end


def _cut_position(prefix: str, text: str) -> int:
    """Where to cut ``text`` so that ``text[:cut]`` (within ``prefix``) ends at a natural boundary."""
    half = len(prefix) // 2
    for candidate in (prefix.rfind("\n\n"), _last_end(_SENTENCE_END, prefix), prefix.rfind("\n")):
        if candidate > half:
            return candidate
    space = _last_end(_SPACE, prefix)
    if space > 0:
        return space
    cut = len(prefix)
    while cut > 1 and (text[cut] in _JOINERS or text[cut - 1] == "\u200d" or unicodedata.combining(text[cut])):
        cut -= 1
    return cut


def split_text(text: str, flavour: Flavour) -> list[str]:
    """``text`` as parts that each fit ``flavour``'s limit: IG-IG 1000 UTF-8 bytes, else 2000 characters.

    Cuts at a paragraph, sentence or line end in the second half of a part, else at the last
    whitespace, else (one very long word) at a character boundary that does not split a glyph.
    """
    if not text.strip():
        return []
    parts: list[str] = []
    rest = text
    while not fits(rest, flavour):
        prefix = _largest_prefix(rest, flavour)
        cut = _cut_position(prefix, rest)
        part = rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:].lstrip()
    if rest.strip():
        parts.append(rest)
    return parts
