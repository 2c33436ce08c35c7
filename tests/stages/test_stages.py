"""Tests of the media stages (probe, keyframes, audio, clip) on Samples, as a runner calls them:
`setup(ctx)` once, then `process_batch(batch)`. Outputs are checked against PyAV's own reading
of the source files, not against the stages' helpers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from vidal.media import synth
from vidal.media.ffmpeg import ffmpeg_exe
from vidal.sample import DROPPED, FAILED, OK, Sample
from vidal.stages import STAGES, StageContext
from vidal.stages.audio import AudioStage
from vidal.stages.clip import ClipStage
from vidal.stages.keyframes import KeyframesStage, load_keyframes
from vidal.stages.probe import ProbeStage

SHARD = 7
CHAIN = ("probe", "keyframes", "audio", "clip")
ERROR_FORMAT = re.compile(r"^[a-z][a-z0-9_]*: \S")  # "<reason>: <detail>"


def _truth(path: Path) -> dict:
    """What PyAV says the file holds, and every frame of it."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return {
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "fps": float(v.average_rate),
            "duration": float(v.duration * v.time_base),
            "has_audio": bool(c.streams.audio),
            "frames": frames,
        }


def _samples(paths: list[Path]) -> list[Sample]:
    return [Sample(key=p.stem, shard=SHARD, source=str(p)) for p in paths]


def _run(stages, ctx: StageContext, batch: list[Sample]) -> list[Sample]:
    for stage in stages:
        stage.setup(ctx)
        before = [s.key for s in batch]
        batch = stage.process_batch(batch)
        assert [s.key for s in batch] == before, f"{stage.name} lost or reordered samples"
    return batch


@pytest.fixture(scope="module")
def chain(clip_bank, tmp_path_factory):
    """The whole media chain run once over the clip bank plus a text file named .mp4."""
    root = tmp_path_factory.mktemp("stages")
    bad = synth.make_text_as_mp4(root / "src" / "not_a_video.mp4")
    paths = sorted(clip_bank.glob("*.mp4"))
    ctx = StageContext(out=str(root / "out"))
    batch = _run([STAGES[name]() for name in CHAIN], ctx, _samples([*paths, bad]))
    by_key = {s.key: s for s in batch}
    return {
        "out": root / "out",
        "ctx": ctx,
        "good": {p.stem: (by_key[p.stem], p, _truth(p)) for p in paths},
        "bad": by_key[bad.stem],
    }


def _stored(chain, rel: str) -> Path:
    return chain["out"] / rel


def test_chain_keeps_every_good_sample(chain):
    assert len(chain["good"]) == 6
    for sample, _, _ in chain["good"].values():
        assert sample.status == OK, sample.errors
        assert sample.errors == {}
        assert set(sample.fields) >= set(CHAIN)
        for name in CHAIN:
            assert sample.lineage[name]["config"] == STAGES[name]().config_hash()


def test_probe_fields(chain):
    for sample, path, truth in chain["good"].values():
        probe = sample.fields["probe"]
        assert (probe["width"], probe["height"]) == (truth["width"], truth["height"])
        assert probe["num_frames"] == len(truth["frames"])
        assert probe["fps"] == pytest.approx(truth["fps"])
        assert probe["duration"] == pytest.approx(truth["duration"], abs=1e-3)
        assert probe["has_audio"] is truth["has_audio"]
        assert probe["size_bytes"] == path.stat().st_size
    assert sum(t["has_audio"] for _, _, t in chain["good"].values()) == 3  # both kinds tested


def test_keyframes_fields_and_payload(chain):
    for key, (sample, _, truth) in chain["good"].items():
        kf = sample.fields["keyframes"]
        assert kf["file"] == f"work/keyframes/{SHARD:05d}/{key}.jpg"
        assert _stored(chain, kf["file"]).is_file()
        total = len(truth["frames"])
        assert kf["indices"] == np.linspace(0, total - 1, 8, dtype=int).tolist()
        assert kf["timestamps"] == pytest.approx(
            [i / truth["fps"] for i in kf["indices"]], abs=1e-3
        )
        assert kf["count"] == 8
        # the bank's clips are 160x120: below the 256 short side, so not resized
        assert (kf["width"], kf["height"]) == (truth["width"], truth["height"])


def test_stored_keyframes_decode_to_the_source_frames(chain):
    for sample, _, truth in chain["good"].values():
        fields = sample.fields["keyframes"]
        frames = load_keyframes(_store(chain), fields)
        assert frames.shape == (8, truth["height"], truth["width"], 3)
        assert frames.dtype == np.uint8
        for k, index in enumerate(fields["indices"]):
            distances = [_mad(frames[k], other) for other in truth["frames"]]
            assert distances[index] < 4.0, (sample.key, k)  # JPEG q95
            # no other frame is clearly closer (a slow shape makes neighbours nearly equal)
            best = int(np.argmin(distances))
            assert distances[index] <= distances[best] + 0.1, (sample.key, k, best)


def _store(chain):
    from vidal.io.store import Store

    return Store(str(chain["out"]))


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_keyframes_png_resized_is_lossless(chain, tmp_path):
    """With png and a smaller short side, the stored tile is exactly the sampled frames."""
    from vidal.media.frames import sample_keyframes

    stage = KeyframesStage(short_side=64, image_format="png")
    batch = [
        Sample.from_json(s.to_json()) for s, _, _ in list(chain["good"].values())[:2]
    ]  # probed samples
    for sample in batch:
        del sample.fields["keyframes"]
    ctx = StageContext(out=str(tmp_path / "out"))
    _run([stage], ctx, batch)
    for sample in batch:
        fields = sample.fields["keyframes"]
        assert fields["file"] == f"work/keyframes/{SHARD:05d}/{sample.key}.png"
        assert (fields["width"], fields["height"]) == (85, 64)
        stored = load_keyframes(stage.store, fields)
        assert stored.shape == (8, 64, 85, 3)
        direct = sample_keyframes(sample.source, 8, "exact", short_side=64)
        assert fields["indices"] == direct.indices
        np.testing.assert_array_equal(stored, direct.frames)


def test_audio_stage(chain):
    for key, (sample, _, truth) in chain["good"].items():
        audio = sample.fields["audio"]
        flac = chain["out"] / f"work/audio/{SHARD:05d}/{key}.flac"
        if not truth["has_audio"]:
            assert audio == {"present": False}
            assert "audio" not in sample.errors
            assert not flac.exists()
            continue
        assert audio["present"] is True
        assert audio["file"] == f"work/audio/{SHARD:05d}/{key}.flac"
        assert flac.is_file()
        info = soundfile.info(str(flac))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        assert audio["sample_rate"] == 16000
        assert audio["num_samples"] == info.frames
        assert audio["duration"] == pytest.approx(truth["duration"], abs=0.06)


def test_clip_stage(chain):
    for key, (sample, _, truth) in chain["good"].items():
        clip = sample.fields["clip"]
        assert clip["file"] == f"work/clip/{SHARD:05d}/{key}.mp4"
        path = _stored(chain, clip["file"])
        assert path.is_file()
        assert clip["bytes"] == path.stat().st_size
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            assert v.codec_context.name == "h264"
            assert v.codec_context.format.name == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (
                clip["width"],
                clip["height"],
            )
            assert bool(c.streams.audio) is truth["has_audio"] is clip["has_audio"]
            frames = sum(1 for _ in c.decode(video=0))
        assert (clip["width"], clip["height"]) == (160, 120)  # never upscaled to 256
        assert frames == len(truth["frames"])
        assert clip["duration"] == pytest.approx(truth["duration"], abs=0.05)


def test_no_stray_files_in_the_store(chain):
    """Payloads only under work/<stage>/<shard>/, and no temp files left behind."""
    files = [p.relative_to(chain["out"]).as_posix() for p in chain["out"].rglob("*") if p.is_file()]
    assert files
    for rel in files:
        assert re.fullmatch(rf"work/(keyframes|audio|clip)/{SHARD:05d}/[^/.][^/]*", rel), rel


def test_bad_file_fails_at_probe_and_skips_the_rest(chain):
    bad = chain["bad"]
    assert bad.status == FAILED
    assert list(bad.errors) == ["probe"]
    assert ERROR_FORMAT.match(bad.errors["probe"]), bad.errors
    assert bad.errors["probe"].startswith("not_media: ")
    assert bad.first_error.startswith("probe: not_media: ")
    assert not set(bad.fields) & {"keyframes", "audio", "clip"}
    assert not list(chain["out"].rglob(f"{bad.key}.*"))


def test_failure_in_a_later_stage_leaves_the_batch_going(chain, tmp_path):
    """One sample's keyframes fail (its file vanished after probing; another lost its probe
    fields); the others in the same batch still get theirs."""
    gone = tmp_path / "gone.mp4"
    shutil.copyfile(next(iter(chain["good"].values()))[1], gone)
    ctx = StageContext(out=str(tmp_path / "out"))
    probed = _run([ProbeStage()], ctx, _samples([gone]))[0]
    assert probed.ok
    gone.unlink()
    goods = [Sample.from_json(s.to_json()) for s, _, _ in chain["good"].values()]
    for sample in goods:
        del sample.fields["keyframes"]
    broken = Sample.from_json(goods[0].to_json())
    broken.key, broken.fields = "no_probe", {}
    batch = _run([KeyframesStage()], ctx, [goods[0], probed, broken, *goods[1:]])

    assert ERROR_FORMAT.match(probed.errors["keyframes"]), probed.errors
    assert broken.errors["keyframes"].startswith("exception: KeyError: ")
    assert "keyframes" not in probed.lineage
    for sample in batch:
        if sample in (probed, broken):
            assert sample.status == FAILED
            assert "keyframes" not in sample.fields
        else:
            assert sample.status == OK and sample.fields["keyframes"]["count"] == 8


def test_probe_drops_what_is_outside_the_limits(clip_bank, tmp_path):
    ctx = StageContext(out=str(tmp_path / "out"))
    paths = sorted(clip_bank.glob("*.mp4"))[:2]
    batch = _run(
        [ProbeStage(max_duration=1.0), KeyframesStage()], ctx, _samples(paths)
    )  # the bank's clips last 1.5-2.5 s
    for sample in batch:
        assert sample.status == DROPPED
        assert sample.dropped_by == "probe"
        assert re.fullmatch(r"too_long: \d+\.\ds > 1s", sample.dropped), sample.dropped
        assert sample.errors == {}
        assert "keyframes" not in sample.fields
    tiny = _run([ProbeStage(min_side=200)], ctx, _samples(paths[:1]))[0]
    assert tiny.dropped.startswith("too_small: 160x120")


def test_missing_ffmpeg_is_a_per_sample_error(clip_bank, tmp_path, monkeypatch):
    paths = sorted(clip_bank.glob("*.mp4"))
    ctx = StageContext(out=str(tmp_path / "out"))
    probed = _run([ProbeStage()], ctx, _samples(paths))
    ffmpeg_exe.cache_clear()
    monkeypatch.setenv("VIDAL_FFMPEG", "/nonexistent/ffmpeg")
    try:
        batch = _run([AudioStage(), ClipStage()], ctx, probed)
    finally:
        monkeypatch.delenv("VIDAL_FFMPEG")
        ffmpeg_exe.cache_clear()
    for sample in batch:
        assert sample.status == FAILED
        stage = "audio" if sample.fields["probe"]["has_audio"] else "clip"
        assert list(sample.errors) == [stage], sample.errors
        assert sample.errors[stage].startswith("ffmpeg_missing: ")
        assert "/nonexistent/ffmpeg" in sample.errors[stage]
        if stage == "clip":
            assert sample.fields["audio"] == {"present": False}
    assert not list((tmp_path / "out").rglob("*.mp4"))
    assert not list((tmp_path / "out").rglob("*.flac"))
