"""The paper's text filters, each drop with its reason."""

from __future__ import annotations

import pytest

from vidal.crawl.filters import TextFilter, apply_filter
from vidal.resources import shipped_path


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


def test_the_papers_140_stop_words_are_shipped_with_their_caveats():
    path = shipped_path("manifests/stopwords.txt")
    words = [ln for ln in path.read_text("utf-8").splitlines() if ln and not ln.startswith("#")]
    assert len(words) == 140 == len(set(words))  # Table 10: 144 cells, 3 "..." and 1 empty
    assert words[:3] == ["viral", "funny", "love"] and words[-1] == "photography"
    assert {"jawellery", "btsarny", "avaiation", "tranding"} <= set(words)  # as printed
    comments = path.read_text("utf-8").lower()
    assert "truncated" in comments or '"..."' in comments
    assert "row 7, column 3" in comments and '"nf"' in comments
    assert "prank" not in TextFilter().stopwords()  # vidal's additions are a separate list
    plus = TextFilter(extra_stopwords_files=["manifests/stopwords-vidal.txt"])
    assert "prank" in plus.stopwords() and "viral" in plus.stopwords()


@pytest.mark.parametrize(
    ("title", "dropped"),
    [
        ("my cat doing gameplay tricks", "stop_word: gameplay"),
        ("sunset over the sea in japan", "stop_word: japan"),
        ("Hairstyle tutorial for short hair", "stop_word: hairstyle"),
        ("a heron catching a fish", None),
    ],
)
def test_paper_stop_words_drop_titles(title, dropped):
    assert apply_filter(TextFilter(), title, [], 8).dropped == dropped


def test_stop_words_can_be_stripped_instead_of_dropping():
    rule = TextFilter(stopword_action="strip")
    result = apply_filter(rule, "Funny cat jumps over a fence", ["#viral", "#cats", "#memes"], 8)
    assert result.dropped is None
    assert result.title == "cat jumps over a fence"
    assert result.hashtags == ["#cats"]
    with pytest.raises(ValueError, match="stopword_action"):
        apply_filter(TextFilter(stopword_action="maybe"), "a title", [], 3)


def test_junk_words_leave_titles_as_words_and_as_hashtags():
    result = apply_filter(TextFilter(), "Shorts: dog surfing a wave YouTube fyp #FYP #surf", [], 9)
    assert result.title == "dog surfing a wave #surf"
    assert result.hashtags == ["#surf"]
    # a junk word inside another word stays: only whole words go
    assert apply_filter(TextFilter(), "youtuber fypfan skating", [], 9).title == (
        "youtuber fypfan skating"
    )
    # junk words no longer count towards the title's words
    only_junk = apply_filter(TextFilter(), "youtube shorts", [], 5)
    assert only_junk.dropped == "too_few_words: 0 < 2 and no hashtag"
    assert {"youtube", "fyp", "shorts"} <= TextFilter().junk_words()
