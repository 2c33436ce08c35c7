"""Text hygiene for titles, hashtags and captions that come from the wild."""

from __future__ import annotations

import itertools
import re
import unicodedata

# Bidi overrides/isolates and zero-width characters: invisible, and used to spoof text.
_INVISIBLE = dict.fromkeys(
    [
        0x061C,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        0xFEFF,
        0x00AD,
    ],
    " ",
)
_SPACES = re.compile(r"\s+")
_HASHTAG = re.compile(r"#[^\s#]+")


def clean_text(text: object, max_chars: int = 1000) -> str:
    """NFKC-normalised text without control or invisible characters, one line, at most
    `max_chars` long (cut at a word boundary when there is one near the end)."""
    if text is None:
        return ""
    # cut first, so the work below is linear in max_chars, not in what a stranger sent; the
    # slack covers what collapsing whitespace and dropping control characters removes
    text = str(text)[: max_chars * 4 + 256]
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cs", "Co") else c for c in text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text.rfind(" ", max_chars - 50, max_chars)
        text = text[: cut if cut > 0 else max_chars].rstrip()
    return text


def parse_hashtags(value: object, max_tags: int = 64) -> list[str]:
    """Hashtags from a list or from free text ("#a #b", "a, b"), as '#tag', de-duplicated."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value[: max_tags * 128]  # 64 tags of 100 characters fit; more is not read
        items = _HASHTAG.findall(value) or [v for v in re.split(r"[,\s]+", value) if v]
    elif isinstance(value, (list, tuple)):
        items = [str(v)[:1024] for v in itertools.islice(value, max_tags * 4)]
    else:  # a number or an object where a list was expected: read as text
        return parse_hashtags(str(value)[: max_tags * 128], max_tags)
    tags: list[str] = []
    for item in items:
        tag = clean_text(item, 100).lstrip("#").strip()
        tag = _SPACES.sub("", tag)
        if tag and f"#{tag}" not in tags:
            tags.append(f"#{tag}")
    return tags[:max_tags]


def hashtags_in(text: str) -> list[str]:
    return parse_hashtags(_HASHTAG.findall(text or ""))


def raw_caption(title: str, hashtags: list[str]) -> str:
    """LanguageBind's `raw` view: the title followed by its hashtags."""
    missing = [t for t in hashtags if t.lower() not in title.lower()]
    return " ".join([title, *missing]).strip()
