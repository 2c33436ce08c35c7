"""The paper's text filters, each drop with its reason."""

from __future__ import annotations

import pytest

from vidal.crawl.filters import TextFilter, apply_filter


@pytest.mark.parametrize(
    ("title", "duration", "dropped"),
    [
        ("Cute cat playing with yarn #shorts", 12, None),
        ("a dog running on the beach", 31, "too_long: 31.0s > 20s"),
        ("a dog running on the beach", 20, None),
        ("cat", 5, "too_few_words: 1 < 2 and no hashtag"),
        ("cat #kitten", 5, None),  # one word, but a real hashtag
        ("cat #shorts #fyp", 5, "too_few_words: 1 < 2 and no hashtag"),  # junk does not count
        ("BTS dance practice", 10, "stop_word: bts"),
        ("ＢＴＳ dance practice", 10, "stop_word: bts"),  # full-width letters normalised
        ("my new BMW drift", 10, "stop_word: bmw"),
        ("\U0001f602\U0001f602\U0001f525", 5, "emoji_only_title"),
        ("https://example.com/watch?v=1", 5, "url_only_title"),
        ("", 5, "too_few_words: 0 < 2 and no hashtag"),
        ("a dog running", None, None),  # unknown duration: checked on the file later
    ],
)
def test_rules_and_reasons(title, duration, dropped):
    assert apply_filter(TextFilter(), title, [], duration).dropped == dropped


def test_junk_hashtags_are_stripped_from_tags_and_title():
    result = apply_filter(
        TextFilter(), "Surfing \u200bdog #shorts #Surf #FYP", ["#viral", "#beach"], 10
    )
    assert result.title == "Surfing dog #Surf"
    assert result.hashtags == ["#beach", "#Surf"]
    assert result.dropped is None


def test_lists_are_configurable():
    rule = TextFilter(extra_stopwords=["kitten"], extra_junk_hashtags=["#cat"], min_title_words=3)
    assert apply_filter(rule, "a kitten sleeping", [], 5).dropped == "stop_word: kitten"
    assert apply_filter(rule, "two words #cat", [], 5).dropped.startswith("too_few_words: 2 < 3")
    assert apply_filter(TextFilter(max_duration=60), "a long clip", [], 45).dropped is None


def test_shipped_lists_hold_the_papers_words():
    rule = TextFilter()
    assert {"viral", "funny", "bts", "bmw", "nfl"} <= rule.stopwords()
    assert {"shorts", "youtube", "fyp", "foryou", "viral", "tiktok"} <= rule.junk()
