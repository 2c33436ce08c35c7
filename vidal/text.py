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
    # printable ASCII is already NFKC and has no invisible or control characters: skip the
    # per-character pass (the bulk of a 10M-caption import's time)
    if not (text.isascii() and text.isprintable()):
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


def given_views(meta: dict) -> dict:
    """Text views that came with the source: a manifest's `text_views` column (an object of
    view -> text or list of texts, e.g. LanguageBind's released captions; KEY.json `extra`
    keeps the original). Untrusted, so cleaned; a view a stage computes replaces it."""
    given = (meta.get("extra") or {}).get("text_views")
    if isinstance(given, str):  # a CSV/JSONL manifest carries it as JSON text
        import json

        try:
            given = json.loads(given)
        except ValueError:
            return {}
    if not isinstance(given, dict):
        return {}
    views = {}
    for name, value in given.items():
        if isinstance(value, str) and clean_text(value):
            views[str(name)] = clean_text(value, 4000)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            views[str(name)] = [clean_text(v, 4000) for v in value]
    return views


def text_views(sample) -> dict:
    """A sample's text views: the caption stages' (`fields["captions"]["views"]`), the
    views the source came with (`given_views`) where no stage made them, and `raw`."""
    views = {**given_views(sample.meta), **sample.fields.get("captions", {}).get("views", {})}
    views.setdefault(
        "raw", raw_caption(sample.meta.get("title", ""), sample.meta.get("hashtags", []))
    )
    return views
