"""Long replies are split to fit Meta's limits, at paragraph, sentence or word boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.send_api.client import Flavour, split_text


def test_short_text_is_one_part() -> None:
    """Text within the limit goes out unchanged."""
    assert split_text("hello  world ", Flavour.IG_IG) == ["hello  world "]


def test_empty_text_has_no_parts() -> None:
    """Whitespace alone gives no part."""
    assert split_text(" \n ", Flavour.MESSENGER) == []


def test_ig_limit_is_1000_bytes_not_characters() -> None:
    """500 two-byte characters fit IG-IG; 501 do not (and fit Messenger)."""
    assert len(split_text("é" * 500, Flavour.IG_IG)) == 1
    assert [len(p) for p in split_text("é" * 501, Flavour.IG_IG)] == [500, 1]
    assert len(split_text("é" * 501, Flavour.MESSENGER)) == 1


def test_prefers_sentence_boundaries() -> None:
    """Parts end at a sentence end when one lies in the second half of the part."""
    sentence = "This is a sentence of moderate length. "
    parts = split_text((sentence * 80).strip(), Flavour.MESSENGER)
    assert len(parts) == 2
    assert all(part.endswith(".") for part in parts)


def test_prefers_paragraphs() -> None:
    """A paragraph break in the second half of a part wins over later sentence ends."""
    text = "a. " * 400 + "\n\n" + "b. " * 400
    parts = split_text(text, Flavour.MESSENGER)
    assert parts[0] == ("a. " * 400).strip()
    assert parts[1].startswith("b.")


def test_one_long_word_is_cut_without_breaking_emoji() -> None:
    """A text with no whitespace is cut at a character boundary, never inside a byte sequence or a skin tone."""
    text = "👋🏽" * 300  # 8 bytes a glyph, no spaces
    parts = split_text(text, Flavour.IG_IG)
    assert "".join(parts) == text
    assert all(len(part.encode()) <= 1000 for part in parts)
    assert all(not part.startswith("🏽") for part in parts)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=5000), st.sampled_from(list(Flavour)))
def test_parts_fit_and_keep_every_word(text: str, flavour: Flavour) -> None:
    """For any text, every part fits the flavour and no non-space character is lost or reordered."""
    parts = split_text(text, flavour)
    for part in parts:
        assert part.strip()
        if flavour is Flavour.IG_IG:
            assert len(part.encode("utf-8", "surrogatepass")) <= 1000
        else:
            assert len(part) <= 2000
    assert "".join("".join(parts).split()) == "".join(text.split())
