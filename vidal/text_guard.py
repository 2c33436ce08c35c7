"""Guardrails for generated text: reject what is not a caption, say why.

Each check returns a reason slug (or None when the text passes); `check` runs them in a fixed
order and returns the first reason, with a short detail. The caption stages count the reasons
per shard (`guardrails` in the shard stats) and fall back to the previous view.

Reasons:
  empty        nothing left after stripping whitespace and quotes
  too_long     more than `max_chars` characters
  refusal      a refusal or assistant chatter ("As an AI...", "I cannot", "Sure, here is")
  language     not the configured language: a cheap heuristic, not a language model. The
               share of letters in the language's script (Latin, Cyrillic, Han, ...) and, for
               languages with a stop-word list here, at least one common stop word in texts of
               5 words or more. Good enough to catch a caption in Chinese when English was asked
               for, or a run of random word pieces; it does not tell Spanish from Portuguese.
  prompt_echo  the output repeats the prompt (a long run of the prompt's words, in order)
  loop         an n-gram loop: one n-gram repeated many times, or a low share of distinct
               n-grams in a long text
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

REASONS = ("empty", "too_long", "refusal", "language", "prompt_echo", "loop")

# Assistant chatter and refusals, matched at the start of the text (case-insensitive) or,
# for the unambiguous ones, anywhere.
_CHATTER_START = re.compile(
    r"^\W*(sure|certainly|of course|okay|ok|absolutely|here is|here's|here are|i'm sorry|"
    r"i am sorry|sorry|i apologi[sz]e|unfortunately|as an ai|as a language model|i cannot|"
    r"i can't|i can not|i am unable|i'm unable|i am not able|i'm not able|i won't|"
    r"i will not|i do not|i don't|hello|hi there|great question|thank you)\b",
    re.IGNORECASE,
)
_CHATTER_ANYWHERE = re.compile(
    r"\b(as an ai\b|as a language model|language model developed by|i cannot (help|assist|"
    r"provide|describe|comply)|i can't (help|assist|provide|describe|comply)|i'm not able to|"
    r"i am not able to|i am unable to|i'm unable to|against my (guidelines|policy)|"
    r"i hope this helps|let me know if)",
    re.IGNORECASE,
)

# Scripts by Unicode character name prefix; the language -> script table is the heuristic.
_SCRIPT_OF = {
    "en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "it": "LATIN", "pt": "LATIN",
    "nl": "LATIN", "pl": "LATIN", "tr": "LATIN", "vi": "LATIN", "id": "LATIN",
    "ru": "CYRILLIC", "uk": "CYRILLIC", "zh": "CJK", "ja": "CJK", "ko": "HANGUL",
    "ar": "ARABIC", "he": "HEBREW", "hi": "DEVANAGARI", "th": "THAI", "el": "GREEK",
}  # fmt: skip
_STOPWORDS = {
    "en": "a an the of and in on with to is are at by for from its it this that his her their "
    "while as into over under near two one some",
    "fr": "le la les un une des de du et en dans sur avec est au aux pour par",
    "de": "der die das ein eine und in im auf mit ist zu von den dem des",
    "es": "el la los las un una de del y en con es por para al",
}
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Guard:
    """Guardrail settings (a section of each caption stage's config)."""

    max_chars: int = 600
    language: str | None = None  # e.g. "en"; None: no language check
    min_script_share: float = 0.6  # share of letters in the language's script
    echo_words: int = 8  # a run of this many prompt words, in order, is an echo
    loop_ngram: int = 3
    loop_max_repeats: int = 3  # one n-gram more often than this is a loop
    loop_min_distinct: float = 0.5  # distinct n-grams / n-grams, for texts of 12+ words

    def check_config(self) -> str | None:
        if self.max_chars < 1:
            return f"max_chars must be >= 1, got {self.max_chars}"
        if self.language is not None and self.language not in _SCRIPT_OF:
            return f"language must be one of {sorted(_SCRIPT_OF)} or null, got {self.language!r}"
        if self.loop_ngram < 1 or self.loop_max_repeats < 1 or self.echo_words < 2:
            return "loop_ngram, loop_max_repeats must be >= 1 and echo_words >= 2"
        return None


def clean_output(text: str) -> str:
    """Model output as a caption: one line, outer whitespace and quotes removed."""
    text = re.sub(r"\s+", " ", text or "").strip()
    return text.strip("\"'`“”‘’ ").strip()


def check(text: str, guard: Guard, prompt: str = "") -> tuple[str, str] | None:
    """(reason, detail) of the first guardrail the text fails, or None when it passes."""
    if not text.strip():
        return "empty", "no text"
    if len(text) > guard.max_chars:
        return "too_long", f"{len(text)} chars > {guard.max_chars}"
    found = refusal(text)
    if found:
        return "refusal", found
    if guard.language:
        problem = wrong_language(text, guard.language, guard.min_script_share)
        if problem:
            return "language", problem
    if prompt and echoes(text, prompt, guard.echo_words):
        return "prompt_echo", f"repeats {guard.echo_words}+ words of the prompt"
    found = loop(text, guard.loop_ngram, guard.loop_max_repeats, guard.loop_min_distinct)
    if found:
        return "loop", found
    return None


def refusal(text: str) -> str | None:
    match = _CHATTER_START.match(text) or _CHATTER_ANYWHERE.search(text)
    return f"{match.group(0).strip()!r}" if match else None


def wrong_language(text: str, language: str, min_share: float = 0.6) -> str | None:
    """Script share and stop words (see the module docstring); None when it looks right."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "no letters"
    script = _SCRIPT_OF[language]
    names = ("CJK", "HIRAGANA", "KATAKANA") if script == "CJK" else (script,)
    share = sum(1 for c in letters if unicodedata.name(c, "").startswith(names)) / len(letters)
    if share < min_share:
        return f"{share:.0%} of letters in the {script.lower()} script"
    stop = _STOPWORDS.get(language)
    words = [w.lower() for w in _WORD.findall(text)]
    if stop and len(words) >= 5 and not set(words) & set(stop.split()):
        return f"no common {language} word in {len(words)} words"
    return None


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def echoes(text: str, prompt: str, run: int = 8) -> bool:
    """The text holds `run` consecutive words of the prompt, in the prompt's order (or is the
    prompt, when the prompt is shorter)."""
    out, src = _words(text), _words(prompt)
    if not out or not src:
        return False
    if len(src) < run:
        return " ".join(src) in " ".join(out)
    grams = {tuple(src[i : i + run]) for i in range(len(src) - run + 1)}
    return any(tuple(out[i : i + run]) in grams for i in range(len(out) - run + 1))


def loop(text: str, n: int = 3, max_repeats: int = 3, min_distinct: float = 0.5) -> str | None:
    """A degenerate repetition: one word more than `max_repeats` times back to back, a 2- to
    n-gram more than `max_repeats` times, or (12+ words) too few distinct n-grams."""
    words = _words(text)
    best = cur = 0
    for i, w in enumerate(words):
        cur = cur + 1 if i and w == words[i - 1] else 1
        if cur > best:
            best, word = cur, w
    if best > max_repeats:
        return f"{word!r} x{best} in a row"
    for size in range(2, max(n, 2) + 1):  # an n-gram, or a shorter one, repeated
        grams = [tuple(words[i : i + size]) for i in range(len(words) - size + 1)]
        if not grams:
            return None
        counts: dict[tuple, int] = {}
        for g in grams:
            counts[g] = counts.get(g, 0) + 1
        gram, most = max(counts.items(), key=lambda kv: kv[1])
        if most > max_repeats:
            return f"{' '.join(gram)!r} x{most}"
    if len(words) >= 12 and len(counts) / len(grams) < min_distinct:
        return f"{len(counts)}/{len(grams)} distinct {size}-grams"
    return None
