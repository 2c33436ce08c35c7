"""The audio_caption stage: a tiny AST tagger and a tiny Llama on CPU, and an OpenAI-compatible
loopback server; clips without audio get no view."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from tests.models.test_openai_http import ScriptedServer
from tests.stages.test_captions import stage_rows, tar_samples
from vidal.config import ConfigError, load_config
from vidal.models.tiny import AUDIO_LABELS
from vidal.run.jobs import build
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.captions import PROMPTS_DIR

TINY = [
    "runner.kind=local",
    "runner.progress=false",
    "stages=[probe,audio,audio_caption]",
    "shards=1",
    "audio_caption.tagger=tiny:ast",
    "audio_caption.llm.model=tiny:llama",
    "audio_caption.llm.decoding.max_new_tokens=6",
    "audio_caption.top_k=3",
    "audio_caption.min_score=0.0",
]


def tiny_config(*overrides: str):
    return load_config("demo", [*TINY, *overrides])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_bank):
    out = tmp_path_factory.mktemp("audio_caption") / "out"
    outcome = build(tiny_config(), str(clip_bank), str(out), quiet=True)
    assert outcome.failure is None, outcome.failure
    return out


def test_build_writes_audio_views_with_lineage_and_none_without_audio(dataset):
    samples = tar_samples(dataset)
    assert len(samples) == 6
    sha = hashlib.sha256((PROMPTS_DIR / "audio_caption.txt").read_text().strip().encode())
    with_audio = 0
    for members in samples.values():
        meta = json.loads(members["json"])
        text = meta["text"]
        if not meta["audio"]["present"]:
            assert set(text) == {"raw"} and not meta["errors"]
            continue
        with_audio += 1
        tags = text["audio_tags"].split(", ")
        assert len(tags) == 3 and set(tags) <= set(AUDIO_LABELS)
        assert isinstance(text["audio_caption"], str) and text["audio_caption"]
        views = meta["lineage"]["audio_caption"]["views"]
        assert views["audio_tags"]["model"] == "tiny:ast"
        assert views["audio_tags"]["revision"].startswith("sha256:")
        assert views["audio_caption"]["prompt_sha256"] == sha.hexdigest()
    assert with_audio == 3
    models = json.loads((dataset / "dataset.json").read_text())["models"]
    assert models["audio_caption"] == {
        "audio_tags": "transformers:tiny:ast",
        "audio_caption": "transformers:tiny:llama",
    }


def audio_samples(dataset) -> list[Sample]:
    return [s for s in stage_rows(dataset, "audio", tiny_config()) if s.fields["audio"]["present"]]


def count_forward(model) -> list[int]:
    calls, forward = [], model.forward

    def counted(*args, **kwargs):
        calls.append(kwargs["input_values"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counted
    return calls


def test_one_tagger_forward_per_batch_deterministic_and_guarded(dataset):
    stage = copy.deepcopy(tiny_config().audio_caption)
    stage.setup(StageContext(str(dataset)))
    calls = count_forward(stage.ready["audio_tags"].net.model)
    samples = audio_samples(dataset)
    first = stage.process_batch(copy.deepcopy(samples))
    second = stage.process_batch(copy.deepcopy(samples))
    assert calls == [3, 3]
    views = [s.fields["captions"]["views"] for s in first]
    assert views == [s.fields["captions"]["views"] for s in second]
    refusal = "As an AI, I cannot hear."
    stage.ready["audio_caption"].net.generate = lambda prompts, _: [refusal] * len(prompts)
    refused = stage.process_batch(copy.deepcopy(samples[:1]))[0]
    tags = refused.fields["audio_caption"]["tags"]
    expected = "Sounds: " + ", ".join(label.lower() for label, _ in tags) + "."
    assert refused.fields["captions"]["views"]["audio_caption"] == expected
    assert refused.fields["captions"]["rejected"]["audio_caption"][0].startswith("refusal:")


def test_without_rewrite_the_caption_is_the_tag_sentence(dataset):
    stage = copy.deepcopy(tiny_config("audio_caption.rewrite=false").audio_caption)
    stage.setup(StageContext(str(dataset)))
    assert set(stage.ready) == {"audio_tags"}
    sample = stage.process_batch(audio_samples(dataset)[:1])[0]
    views = sample.fields["captions"]["views"]
    assert views["audio_caption"] == "Sounds: " + views["audio_tags"].lower() + "."


def test_llm_over_http_gets_the_tags_and_the_title(dataset):
    server = ScriptedServer(lambda body: "A dog barks while music plays softly.")
    try:
        config = tiny_config(
            "audio_caption.llm.backend=openai",
            "audio_caption.llm.model=llm",
            f"audio_caption.llm.base_url={server.url}",
        )
        stage = copy.deepcopy(config.audio_caption)
        stage.setup(StageContext(str(dataset)))
        sample = stage.process_batch(audio_samples(dataset)[:1])[0]
    finally:
        server.close()
    assert sample.fields["captions"]["views"]["audio_caption"] == (
        "A dog barks while music plays softly."
    )
    prompt = server.bodies[0]["messages"][0]["content"]
    assert sample.meta["title"] in prompt
    assert sample.fields["captions"]["views"]["audio_tags"].split(", ")[0] in prompt
    assert sample.lineage["audio_caption"]["views"]["audio_caption"]["backend"] == "openai"


def test_without_the_audio_stage_samples_fail_with_the_reason(tmp_path):
    stage = copy.deepcopy(tiny_config().audio_caption)
    stage.setup(StageContext(str(tmp_path)))
    sample = stage.process_batch([Sample("k", 0, "x", meta={"title": "t"})])[0]
    assert sample.errors["audio_caption"].startswith("no_audio_stage")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("audio_caption.tagger=tiny:nope", "audio_caption.tagger"),
        ("audio_caption.llm.model=tiny:blip", "audio_caption.llm"),
        ("audio_caption.top_k=0", "top_k"),
        ("audio_caption.asr=tiny:llama", "audio_caption.asr"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(override)


def test_asr_speech_view_one_generate_per_batch_and_whisper_loops_rejected(dataset):
    config = tiny_config(
        "audio_caption.asr=tiny:whisper", "audio_caption.asr_decoding.max_new_tokens=12"
    )
    stage = copy.deepcopy(config.audio_caption)
    stage.setup(StageContext(str(dataset)))
    whisper = stage.ready["speech"].net.model
    calls, generate = [], whisper.generate

    def counted(*args, **kwargs):
        calls.append(kwargs["input_features"].shape[0])
        return generate(*args, **kwargs)

    whisper.generate = counted
    samples = audio_samples(dataset)
    real = stage.process_batch(copy.deepcopy(samples))
    assert calls == [3]  # the real tiny model, once for the batch
    for sample in real:  # random weights: a transcript, or a loop that was rejected
        views, rejected = sample.fields["captions"]["views"], sample.fields["captions"]
        assert "speech" in views or rejected["rejected"]["speech"][0].startswith("loop:")
        assert sample.lineage["audio_caption"]["views"]["speech"]["model"] == "tiny:whisper"
    said = ["a man says hello to the camera", "", "la la la la la la la la la la la la"]
    stage.ready["speech"].net.transcribe = lambda waves, decoding: said[: len(waves)]
    prompts = []

    def llm(batch_prompts, decoding):
        prompts.extend(batch_prompts)
        return ["The soundtrack has a voice."] * len(batch_prompts)

    stage.ready["audio_caption"].net.generate = llm
    first, silent, looping = stage.process_batch(copy.deepcopy(samples))
    assert first.fields["captions"]["views"]["speech"] == said[0]
    assert "Speech heard: a man says hello to the camera" in prompts[0]
    assert "speech" not in silent.fields["captions"]["views"]
    assert "Speech heard: none" in prompts[1] and "rejected" not in silent.fields["captions"]
    assert "speech" not in looping.fields["captions"]["views"]
    assert looping.fields["captions"]["rejected"]["speech"][0].startswith("loop:")
    assert config.audio_caption.model["speech"] == "transformers:tiny:whisper"
