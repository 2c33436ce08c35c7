"""The paper's text filters for crawl candidates, every threshold and list configurable.

A candidate is kept when its (known) duration is at most `max_duration`, its title has at least
`min_title_words` words or it carries at least one hashtag that is not junk, and no title word is
on the stop-word list (the paper's Table 10; `stopword_action: strip` removes them instead).
Junk hashtags (#shorts, #fyp, ...) are stripped first, from the hashtag list and from the title
text, and junk words ("youtube", "fyp", "shorts": the paper's Section 4.2) from the title as bare
words too, so they neither count nor reach the `raw` caption. Titles made only of emoji, symbols
or URLs are dropped. Every drop has a reason slug.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

from vidal.resources import shipped_path
from vidal.text import clean_text, parse_hashtags

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_HASHTAG = re.compile(r"#[^\s#]+")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
STOPWORD_ACTIONS = ("drop", "strip")


@dataclass
class TextFilter:
    max_duration: float = 20.0  # seconds; unknown durations pass here and are checked on download
    min_title_words: int = 2  # ... unless the candidate has a (non-junk) hashtag
    stopwords_file: str = "manifests/stopwords.txt"  # relative: vidal's shipped manifests/
    junk_hashtags_file: str = "manifests/junk_hashtags.txt"
    junk_words_file: str = "manifests/junk_words.txt"  # removed as words and as hashtags
    extra_stopwords: list[str] = field(default_factory=list)
    extra_stopwords_files: list[str] = field(default_factory=list)  # more lists, same format
    extra_junk_hashtags: list[str] = field(default_factory=list)
    extra_junk_words: list[str] = field(default_factory=list)
    stopword_action: str = "drop"  # drop: the candidate goes; strip: the words go from its text
    max_title_chars: int = 300

    def stopwords(self) -> frozenset[str]:
        lists = [_word_list(f) for f in (self.stopwords_file, *self.extra_stopwords_files)]
        return frozenset().union(*lists) | {w.lower() for w in self.extra_stopwords}

    def junk_words(self) -> frozenset[str]:
        extra = {w.lower().lstrip("#") for w in self.extra_junk_words}
        return (_word_list(self.junk_words_file) if self.junk_words_file else frozenset()) | extra

    def junk(self) -> frozenset[str]:
        """Hashtags to strip: the junk hashtags and the junk words."""
        extra = {w.lower().lstrip("#") for w in self.extra_junk_hashtags}
        return _word_list(self.junk_hashtags_file) | extra | self.junk_words()


@dataclass
class FilteredText:
    title: str  # cleaned, junk hashtags and URLs removed
    hashtags: list[str]  # '#tag', junk removed, de-duplicated
    dropped: str | None  # "too_long: 31.0s > 20s", "stop_word: viral", ... or None when kept


@functools.lru_cache(maxsize=32)
def _word_list(path: str) -> frozenset[str]:
    """One entry per line, lower-cased, '#' prefix removed; '# ' lines are comments."""
    words = set()
    for line in shipped_path(path).read_text("utf-8").splitlines():
        line = unicodedata.normalize("NFKC", line).strip()
        if not line or line == "#" or line.startswith("# "):
            continue
        words.add(line.lstrip("#").strip().lower())
    return frozenset(w for w in words if w)


def title_words(title: str) -> list[str]:
    """Words of a title, lower-cased, without hashtags or URLs."""
    text = _HASHTAG.sub(" ", _URL.sub(" ", title))
    return [w.lower() for w in _WORD.findall(text)]


def strip_junk(title: str, hashtags: list[str], junk: frozenset[str]) -> tuple[str, list[str]]:
    """Remove junk hashtags from the hashtag list and from the title text."""

    def keep(match: re.Match) -> str:
        return "" if match.group(0)[1:].lower() in junk else match.group(0)

    cleaned = re.sub(r"\s+", " ", _HASHTAG.sub(keep, title)).strip()
    return cleaned, [t for t in hashtags if t[1:].lower() not in junk]


def strip_words(text: str, words: frozenset[str]) -> str:
    """Remove whole words (case-insensitive, not inside hashtags) from a title."""
    if not words:
        return text

    def keep(match: re.Match) -> str:
        word = match.group(0)
        return "" if not word.startswith("#") and word.lower() in words else word

    text = re.sub(r"\s+", " ", re.sub(r"#[^\s#]+|" + _WORD.pattern, keep, text))
    return text.strip(" :;,|-–—")  # a separator left at either end by a removed word


def apply_filter(
    rule: TextFilter, title: str, hashtags: list[str], duration: float | None
) -> FilteredText:
    """Clean the text and decide whether the candidate is kept (and why not)."""
    if rule.stopword_action not in STOPWORD_ACTIONS:
        raise ValueError(f"stopword_action must be one of {STOPWORD_ACTIONS}")
    raw = clean_text(title, rule.max_title_chars)
    tags = parse_hashtags([*hashtags, *_HASHTAG.findall(raw)])
    text, tags = strip_junk(_URL.sub(" ", raw).strip(), tags, rule.junk())
    text = strip_words(text, rule.junk_words())
    if rule.stopword_action == "strip":
        text = strip_words(text, rule.stopwords())
        tags = [t for t in tags if t[1:].lower() not in rule.stopwords()]
    return FilteredText(text, tags, _drop_reason(rule, raw, text, tags, duration))


def _drop_reason(rule, raw: str, text: str, tags: list[str], duration) -> str | None:
    if duration is not None and duration > rule.max_duration:
        return f"too_long: {float(duration):.1f}s > {rule.max_duration:g}s"
    without_urls = _URL.sub(" ", raw).strip()
    if raw and not without_urls:
        return "url_only_title"
    if raw and not _WORD.search(without_urls):  # no letter or digit anywhere, hashtags included
        return "emoji_only_title"
    words = title_words(text)
    if len(words) < rule.min_title_words and not tags:
        return f"too_few_words: {len(words)} < {rule.min_title_words} and no hashtag"
    hits = sorted(set(words) & rule.stopwords())
    if hits:
        return f"stop_word: {hits[0]}"
    return None
