"""The enhance stage with the tiny LLM: batching, determinism, lineage, fallbacks."""

from __future__ import annotations

import copy

import pytest

from tests.stages.test_captions import count_generate, stage_rows, tiny_config, tiny_dataset
from vidal.sample import Sample
from vidal.stages.base import StageContext


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, clip_bank):
    out = tiny_dataset(tmp_path_factory, clip_bank)
    return out, stage_rows(out, "captions", tiny_config())


def enhance_stage(out, *overrides):
    stage = copy.deepcopy(tiny_config(*overrides).enhance)
    stage.setup(StageContext(str(out)))
    return stage


def test_one_generate_call_per_batch_deterministic_with_lineage(captioned):
    out, samples = captioned
    results = []
    for _ in range(2):
        stage = enhance_stage(out)
        calls = count_generate(stage.ready["enhanced"].net.model)
        batch = stage.process_batch(copy.deepcopy(samples))
        assert calls == [len(samples)]  # one call for the whole batch
        results.append([s.fields["captions"]["views"]["enhanced"] for s in batch])
    assert results[0] == results[1] and all(results[0])
    lineage = batch[0].lineage["enhance"]["views"]["enhanced"]
    assert lineage["model"] == "tiny:llama" and lineage["prompt"] == "enhance.txt"
    assert len(lineage["prompt_sha256"]) == 64 and lineage["decoding"]["max_new_tokens"] == 6


def test_prompt_carries_title_hashtags_and_captions(captioned):
    out, samples = captioned
    stage = enhance_stage(out)
    seen = []
    stage.ready["enhanced"].net.generate = lambda prompts, d: (
        seen.extend(prompts) or ["a red triangle glides across the frame"] * len(prompts)
    )
    sample = copy.deepcopy(samples[0])
    stage.process_batch([sample])
    views = sample.fields["captions"]["views"]
    assert sample.meta["title"] in seen[0] and views["video_caption"] in seen[0]
    assert views["keyframe_captions"][0] in seen[0]
    assert views["enhanced"] == "a red triangle glides across the frame"


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty"),
        ("I'm sorry, I cannot help with that.", "refusal"),
        ("word " * 400, "too_long"),
        ("a clip a clip a clip a clip a clip", "loop"),
    ],
)
def test_rejected_output_falls_back_to_the_video_caption(captioned, answer, reason):
    out, samples = captioned
    stage = enhance_stage(out)
    stage.ready["enhanced"].net.generate = lambda prompts, d: [answer] * len(prompts)
    sample = copy.deepcopy(samples[0])
    stage.process_batch([sample])
    captions = sample.fields["captions"]
    assert captions["views"]["enhanced"] == captions["views"]["video_caption"]
    assert captions["rejected"]["enhanced"][0].startswith(reason + ":")


def test_prompt_echo_and_language_fall_back_to_raw_without_a_video_caption(captioned):
    out, _ = captioned
    stage = enhance_stage(out, "enhance.guard.language=en")
    sample = Sample("k", 0, "x", meta={"title": "a red circle", "hashtags": ["#red"]})
    other = Sample("j", 0, "x", meta={"title": "a blue square", "hashtags": []})
    echo = "Rewrite the description of a short video into one faithful, dense English description"
    stage.ready["enhanced"].net.generate = lambda prompts, d: [echo, "一只狗在海滩上奔跑"]
    stage.process_batch([sample, other])
    assert sample.fields["captions"]["views"]["enhanced"] == "a red circle #red"
    assert sample.fields["captions"]["rejected"]["enhanced"][0].startswith("prompt_echo:")
    assert other.fields["captions"]["views"]["enhanced"] == "a blue square"
    assert other.fields["captions"]["rejected"]["enhanced"][0].startswith("language:")


def test_an_llm_that_cannot_load_fails_every_sample_alike(captioned, tmp_path):
    out, samples = captioned
    stage = enhance_stage(out, f"enhance.llm.model={tmp_path}/missing")
    batch = stage.process_batch(copy.deepcopy(samples[:3]))
    assert all(s.errors["enhance"].startswith("model_unavailable") for s in batch)
