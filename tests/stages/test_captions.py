"""The captions stage (and the caption views in a build): tiny transformers models on CPU, and
an OpenAI-compatible loopback server with scripted answers and faults."""

from __future__ import annotations

import copy
import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.models.test_openai_http import SECRET, ScriptedServer
from vidal.config import ConfigError, load_config
from vidal.io.shards import shard_row, shard_stats
from vidal.run.build import Builder
from vidal.run.jobs import build
from vidal.sample import Sample
from vidal.stages.base import StageContext
from vidal.stages.captions import PROMPTS_DIR
from vidal.stages.enhance import EnhanceStage

TINY = [
    "runner.kind=local",
    "runner.progress=false",
    "stages=[probe,keyframes,captions,enhance]",
    "shards=1",
    "captions.keyframe.model=tiny:blip",
    "captions.video.model=tiny:qwen2_vl",
    "captions.frame_short_side=56",
    "captions.keyframe.decoding.max_new_tokens=6",
    "captions.video.decoding.max_new_tokens=6",
    "captions.batch_size=4",
    "enhance.llm.model=tiny:llama",
    "enhance.llm.decoding.max_new_tokens=6",
    "enhance.batch_size=4",
    "pack.caption_view=enhanced",
]
_BUILT: dict[str, Path] = {}


def tiny_config(*overrides: str):
    return load_config("demo", [*TINY, *overrides])


def tiny_dataset(tmp_path_factory, clip_bank) -> Path:
    """The clip bank through probe -> keyframes -> captions -> enhance, tiny models (once)."""
    if "out" not in _BUILT:
        out = tmp_path_factory.mktemp("captions") / "out"
        outcome = build(tiny_config(), str(clip_bank), str(out), quiet=True)
        assert outcome.failure is None, outcome.failure
        _BUILT["out"] = out
    return _BUILT["out"]


def stage_rows(out: Path, stage: str, config) -> list[Sample]:
    builder = Builder(config, None, str(out), runner=None)
    builder.planned_fingerprints()
    found = []
    for shard in range(builder.shard_count):
        if builder.marker(stage, shard):
            found += [Sample.from_json(r) for r in builder.read_rows(stage, shard).values()]
    return sorted(found, key=lambda s: s.key)


def tar_samples(out: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in sorted((out / "shards").glob("vidal-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                found.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_bank):
    return tiny_dataset(tmp_path_factory, clip_bank)


def count_generate(model) -> list[int]:
    calls = []
    original = model.generate

    def counted(*args, **kwargs):
        calls.append(len(kwargs.get("input_ids", [])))
        return original(*args, **kwargs)

    model.generate = counted
    return calls


def test_build_writes_every_view_with_its_lineage(dataset):
    samples = tar_samples(dataset)
    assert len(samples) == 6
    sha = hashlib.sha256((PROMPTS_DIR / "video_caption.txt").read_text().strip().encode())
    for members in samples.values():
        meta = json.loads(members["json"])
        text = meta["text"]
        assert set(text) == {"raw", "keyframe_captions", "video_caption", "enhanced"}
        assert len(text["keyframe_captions"]) == 8
        assert all(isinstance(c, str) and c for c in text["keyframe_captions"])
        assert members["txt"].decode() == text["enhanced"] and meta["caption_view"] == "enhanced"
        views = meta["lineage"]["captions"]["views"]
        assert views["keyframe_captions"]["model"] == "tiny:blip"
        assert views["video_caption"]["prompt_sha256"] == sha.hexdigest()
        assert views["video_caption"]["revision"].startswith("sha256:")
        assert views["video_caption"]["decoding"]["max_new_tokens"] == 6
        enhanced = meta["lineage"]["enhance"]["views"]["enhanced"]
        assert enhanced["model"] == "tiny:llama" and enhanced["decoding"]["temperature"] == 0.0
    table = pq.read_table(sorted((dataset / "shards").glob("*.parquet"))[0]).to_pylist()
    assert all("enhanced" in r["caption_views"] for r in table if r["status"] == "ok")
    stats = json.loads(sorted((dataset / "shards").glob("*.stats.json"))[0].read_text())
    assert "guardrails" in stats and stats["kept"] == 6


def test_one_generate_call_per_batch_and_deterministic(dataset):
    config = tiny_config()
    keyframed = stage_rows(dataset, "keyframes", config)[:4]
    stage = copy.deepcopy(config.captions)
    stage.setup(StageContext(str(dataset)))
    image = count_generate(stage.ready["keyframe_captions"].net.model)
    video = count_generate(stage.ready["video_caption"].net.model)
    outputs = []
    for _ in range(2):
        batch = stage.process_batch(copy.deepcopy(keyframed))
        assert all(s.ok for s in batch)
        outputs.append([s.fields["captions"]["views"] for s in batch])
    # one call for the 4 x 8 frames and one for the 4 clips, per batch
    assert image == [32, 32] and video == [4, 4]
    assert outputs[0] == outputs[1]  # greedy decoding: deterministic
    # batch-invariant: a clip captioned alone gets the caption it got in the batch
    alone = stage.process_batch(copy.deepcopy(keyframed[1:2]))[0]
    assert alone.fields["captions"]["views"] == outputs[0][1]
    # and the build (another process of loading the same tiny models) wrote the same views
    built = {s.key: s for s in stage_rows(dataset, "captions", config)}
    first = outputs[0][0]
    assert (
        built[keyframed[0].key].fields["captions"]["views"]["video_caption"]
        == first["video_caption"]
    )


def test_guardrails_reject_and_fall_back_to_raw(dataset):
    config = tiny_config()
    keyframed = stage_rows(dataset, "keyframes", config)[:2]
    stage = copy.deepcopy(config.captions)
    stage.setup(StageContext(str(dataset)))
    frame_texts = ["As an AI, I cannot see images.", *["a small red circle on grey"] * 7]
    stage.ready["keyframe_captions"].net.caption = lambda clips, *a: [frame_texts] * len(clips)
    stage.ready["video_caption"].net.caption = lambda clips, *a: [
        "the circle the circle the circle the circle moves",
        "a red circle moves from left to right",
    ][: len(clips)]
    batch = stage.process_batch(copy.deepcopy(keyframed))
    first, second = (s.fields["captions"] for s in batch)
    raw = first["views"]["raw"]
    assert first["views"]["keyframe_captions"][0] == raw  # the refusal fell back to raw
    assert first["views"]["keyframe_captions"][1] == "a small red circle on grey"
    assert first["views"]["video_caption"] == raw  # the loop fell back to raw
    assert first["rejected"]["video_caption"][0].startswith("loop:")
    assert first["rejected"]["keyframe_captions"][0].startswith("refusal:")
    assert second["views"]["video_caption"] == "a red circle moves from left to right"
    rows = [shard_row(s, "video_caption", {}) for s in batch]
    assert rows[0]["guardrail_rejections"] == ["keyframe_captions: refusal", "video_caption: loop"]
    stats = shard_stats(rows, 0, "f", 0.0)
    assert stats["guardrails"] == {"refusal": 2, "loop": 1}  # both samples' frame 0 refused
    assert stats["guardrails_by_view"]["video_caption: loop"] == 1


def test_a_model_that_cannot_load_fails_the_build_and_stores_nothing(tmp_path, clip_bank, capsys):
    """Not the samples' fault: no sample is stored as failed; one sentence names the cause."""
    config = tiny_config("stages=[probe,keyframes,captions]", f"captions.video.model={tmp_path}/x")
    outcome = build(config, str(clip_bank), str(tmp_path / "out"), quiet=True)
    assert "captions: model_unavailable in 6 samples" in outcome.failure
    assert "rerun the same command" in outcome.failure
    assert stage_rows(tmp_path / "out", "captions", config) == []  # no marker vouches for any
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("captions.keyframe.model=tiny:clip", "unknown tiny model 'tiny:clip'"),
        ("captions.video.prompt=missing.txt", "prompt file 'missing.txt' not found"),
        ("captions.video.backend=grpc", "backend must be one of"),
        ("captions.video.base_url=ftp://x", "must be an http(s) URL"),
        ("captions.guard.language=xx", "language must be one of"),
        ("enhance.llm.model=tiny:blip", "unknown tiny model 'tiny:blip'"),
    ],
)
def test_config_errors_name_the_key(override, message):
    overrides = (
        [override, "captions.video.backend=openai"] if "base_url" in override else [override]
    )
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(*overrides)


def test_prompt_edits_change_the_config_hash(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("describe {title}")
    first = tiny_config(f"captions.video.prompt={prompt}").captions.config_hash()
    prompt.write_text("describe {title} briefly")
    assert tiny_config(f"captions.video.prompt={prompt}").captions.config_hash() != first
    # how requests run never invalidates results
    a = tiny_config("captions.video.concurrency=2", "captions.video.timeout_s=5")
    assert a.captions.config_hash() == tiny_config().captions.config_hash()


# -- the OpenAI-compatible backend, end to end ---------------------------------------------


def scripted_answer(body: dict):
    """Keyframe caption (1 image), video caption (8 images) or enhancement (text only)."""
    content = body["messages"][0]["content"]
    if isinstance(content, str):
        if "a blue" in content.lower():
            return "Sure, here is the description you asked for."  # refusal -> fallback
        return "A coloured shape moves across a plain background in a short clip."
    images = sum(1 for p in content if p["type"] == "image_url")
    prompt = next(p["text"] for p in content if p["type"] == "text")
    if images == 1:
        return "a shape on a plain background"
    if "magenta" in prompt:
        return None  # an empty choice list: that sample fails, the build goes on
    return f"a video of a moving shape, {images} frames"


HTTP = [
    "captions.keyframe.backend=openai",
    "captions.keyframe.model=vlm",
    "captions.keyframe.prompt=keyframe_caption_vlm.txt",
    "captions.video.backend=openai",
    "captions.video.model=vlm",
    "enhance.llm.backend=openai",
    "enhance.llm.model=llm",
    "captions.keyframe.max_retries=3",
    "captions.video.max_retries=3",
]


def test_build_over_http_with_faults_views_and_no_leaked_key(tmp_path, clip_bank, monkeypatch):
    monkeypatch.setenv("VIDAL_TEST_KEY", SECRET)
    server = ScriptedServer(scripted_answer)
    server.faults = ["500", "429", "timeout"]
    try:
        urls = [f"{s}.base_url={server.url}" for s in ("captions.keyframe", "captions.video")]
        keys = [f"{s}.api_key_env=VIDAL_TEST_KEY" for s in ("captions.keyframe", "captions.video")]
        config = tiny_config(
            *HTTP,
            *urls,
            *keys,
            f"enhance.llm.base_url={server.url}",
            "enhance.llm.api_key_env=VIDAL_TEST_KEY",
            "captions.keyframe.timeout_s=0.3",
        )
        out = tmp_path / "out"
        outcome = build(config, str(clip_bank), str(out), quiet=True)
    finally:
        server.close()
    assert outcome.failure is None
    assert server.counts["500"] == server.counts["429"] == server.counts["timeout"] == 1
    assert set(server.auth) == {f"Bearer {SECRET}"}
    titles = {}
    for key, members in tar_samples(out).items():
        meta = json.loads(members["json"])
        titles[key] = meta["title"]
        text = meta["text"]
        assert text["keyframe_captions"] == ["a shape on a plain background"] * 8
        assert text["video_caption"] == "a video of a moving shape, 8 frames"
        assert members["txt"].decode() == text["enhanced"]
        if "blue" in meta["title"]:
            assert text["enhanced"] == text["video_caption"]  # the refusal fell back
        else:
            assert text["enhanced"].startswith("A coloured shape moves")
        assert meta["lineage"]["captions"]["views"]["video_caption"]["backend"] == "openai"
    assert titles and not any("magenta" in t for t in titles.values())
    samples = stage_rows(out, "captions", config)
    failed = [s for s in samples if "magenta" in s.meta["title"]]
    assert failed and all(s.errors["captions"].startswith("no_choices") for s in failed)
    stats = json.loads(next((out / "shards").glob("*.stats.json")).read_text())
    blue = sum("blue" in t for t in titles.values())
    assert stats["guardrails"] == ({"refusal": blue} if blue else {})
    models = json.loads((out / "dataset.json").read_text())["models"]
    assert models["captions"]["video_caption"] == "openai:vlm"
    assert models["enhance"] == {"enhanced": "openai:llm"}
    for path in out.rglob("*"):  # the key is in no output file
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_enhance_stage_alone_over_http(tmp_path):
    server = ScriptedServer(scripted_answer)
    try:
        stage = EnhanceStage()
        stage.llm.backend, stage.llm.model, stage.llm.base_url = "openai", "llm", server.url
        stage.setup(StageContext(str(tmp_path)))
        sample = Sample("k", 0, "x", meta={"title": "a red circle", "hashtags": ["#red"]})
        sample.fields["captions"] = {"views": {"video_caption": "a red circle moves"}}
        stage.process_batch([sample])
    finally:
        server.close()
    assert sample.ok and sample.fields["captions"]["views"]["enhanced"].startswith("A coloured")
    prompt = server.bodies[0]["messages"][0]["content"]
    assert "a red circle moves" in prompt and "#red" in prompt
