"""Every guardrail of generated captions, and what passes."""

from __future__ import annotations

import pytest

from vidal.text_guard import REASONS, Guard, check, clean_output

PROMPT = (
    'This short video is titled "funny dog" with the hashtags #dog. Describe what happens in '
    "the video in one or two sentences."
)
GOOD = "A brown dog runs along the beach and jumps into the waves."


def reason(text: str, guard: Guard | None = None, prompt: str = PROMPT) -> str | None:
    found = check(text, guard or Guard(language="en"), prompt)
    return found[0] if found else None


def test_a_caption_passes():
    assert reason(GOOD) is None
    assert reason("Un chien court sur la plage avec une balle.", Guard(language="fr")) is None
    assert reason("一只狗在海滩上奔跑", Guard(language="zh")) is None


@pytest.mark.parametrize("text", ["", "   ", '""'])
def test_empty(text):
    assert reason(clean_output(text)) == "empty"


def test_too_long():
    assert reason(GOOD * 20, Guard(max_chars=200)) == "too_long"


@pytest.mark.parametrize(
    "text",
    [
        "As an AI language model, I cannot see videos.",
        "I cannot describe this video.",
        "Sure, here is a description: a dog on a beach.",
        "Here's a caption: a dog runs.",
        "I'm sorry, but I can't help with that.",
        "A dog runs on the beach. I hope this helps!",
    ],
)
def test_refusals_and_chatter(text):
    assert reason(text) == "refusal"


def test_wrong_language_by_script_and_by_stop_words():
    assert reason("一只狗在海滩上奔跑") == "language"
    assert reason("Собака бежит по пляжу") == "language"
    assert reason("##cate deserveborne undoubtedly defences managed newer") == "language"
    assert reason("一只狗在海滩上奔跑", Guard(language=None)) is None  # not configured: no check


def test_prompt_echo():
    echo = "This short video is titled funny dog with the hashtags #dog and shows a dog."
    assert reason(echo) == "prompt_echo"
    assert reason(GOOD + " funny dog") is None  # sharing a few words is fine


@pytest.mark.parametrize(
    "text",
    [
        "the dog the dog the dog the dog the dog runs",
        "a cat on a mat a cat on a mat a cat on a mat a cat on a mat",
        "a dog dog dog dog dog",
    ],
)
def test_ngram_loops(text):
    assert reason(text) == "loop"


def test_every_reason_is_known_and_config_is_checked():
    assert set(REASONS) == {"empty", "too_long", "refusal", "language", "prompt_echo", "loop"}
    assert Guard().check_config() is None
    assert "language" in Guard(language="xx").check_config()
    assert Guard(max_chars=0).check_config()


def test_clean_output_strips_quotes_and_lines():
    assert clean_output(' "A dog\n runs." ') == "A dog runs."
