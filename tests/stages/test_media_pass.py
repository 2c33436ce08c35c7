"""One decode per clip (vidal.stages.media_pass): which stages share a pass, that the pass runs
one ffmpeg process per clip, and that its outputs mean what the separate stages' outputs mean."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest

import vidal.media.audio
import vidal.media.encode
import vidal.media.ffmpeg
import vidal.media.frames
import vidal.media.onepass
import vidal.stages.media_pass
from vidal.config import load_config
from vidal.media import synth
from vidal.sample import OK, Sample
from vidal.stages import STAGES, StageContext
from vidal.stages.keyframes import load_keyframes
from vidal.stages.media_pass import plan_media_pass

CHAIN = ("probe", "keyframes", "audio", "clip")


def _roles(stages) -> dict[str, tuple[str, ...] | None]:
    """Each media stage's followers in the pass it leads (None: it leads none)."""
    roles = {}
    for stage in stages:
        mp = getattr(stage, "media_pass", "absent")
        if mp == "absent":
            continue
        names = tuple(s.name for s in (mp.audio, mp.clip) if s is not None) if mp else None
        roles[stage.name] = names
    return roles


def test_the_rule_follows_the_stage_order():
    plain = load_config("demo", ["stages=[probe,keyframes,audio,clip]"]).pipeline()
    assert _roles(plain) == {"keyframes": ("audio", "clip"), "audio": None, "clip": None}
    # vl_filter with a threshold (and dedup) drop samples: keyframes seek, the kept clips get
    # audio + mp4 from one pass
    roles = _roles(load_config("vidal10m-plus").pipeline())
    assert roles == {"keyframes": None, "audio": ("clip",), "clip": None}
    scored = load_config("demo", ["vl_filter.threshold=0.2"]).pipeline()
    assert _roles(scored) == {"keyframes": None, "audio": ("clip",), "clip": None}
    # a vl_filter that only scores (threshold null: vidal10m, demo) drops nothing
    for name in ("demo", "vidal10m"):
        roles = _roles(load_config(name).pipeline())
        assert roles == {"keyframes": ("audio", "clip"), "audio": None, "clip": None}, name
    order = ["stages=[probe,keyframes,clip,vl_filter,audio]", "vl_filter.threshold=0.2"]
    late = load_config("demo", order).pipeline()
    assert _roles(late) == {"keyframes": ("clip",), "clip": None, "audio": None}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "long.mp4"
    synth.make_clip(path, duration=4.0, width=320, height=180, fps=25, keyint_s=10.0)
    return path


def _stages(names, fused: bool, **keyframes):
    stages = [STAGES[n](**(keyframes if n == "keyframes" else {})) for n in names]
    return plan_media_pass(stages) if fused else stages


def _run(stages, out, path):
    batch = [Sample(key="k", shard=0, source=str(path))]
    ctx = StageContext(out=str(out))
    for stage in stages:
        stage.setup(ctx)
        batch = stage.process_batch(batch)
    (sample,) = batch
    assert sample.status == OK, sample.errors
    return sample


class _Count:
    """Counts calls of a function, and still calls it."""

    def __init__(self, monkeypatch, module, name):
        self.calls, real = 0, getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def _counters(monkeypatch):
    mods = (vidal.media.onepass, vidal.media.encode, vidal.media.audio)
    return {
        "ffmpeg": [_Count(monkeypatch, m, "run_ffmpeg") for m in mods],
        "pyav": _Count(monkeypatch, vidal.media.frames, "open_media"),
    }


@pytest.mark.parametrize("mode", ["exact", "snap"])
@pytest.mark.parametrize("rule", ["linspace", "languagebind_gen"])
def test_one_pass_decodes_once_and_matches_the_separate_stages(
    source, tmp_path, monkeypatch, mode, rule
):
    kf = dict(mode=mode, indices=rule, full_frames=True, full_short_side=0, short_side=128)
    apart = _run(_stages(CHAIN, False, **kf), tmp_path / "apart", source)
    counts = _counters(monkeypatch)
    fused = _run(_stages(CHAIN, True, **kf), tmp_path / "fused", source)
    assert sum(c.calls for c in counts["ffmpeg"]) == 1  # keyframes, FLAC and mp4: one process
    assert counts["pyav"].calls == 1  # one demux (no decode) finds the frames to keep
    a, f = apart.fields, fused.fields
    assert f["keyframes"]["indices"] == a["keyframes"]["indices"]
    assert f["keyframes"]["timestamps"] == a["keyframes"]["timestamps"]
    assert f["audio"]["num_samples"] == a["audio"]["num_samples"] == 4 * 16000
    assert {k: f["clip"][k] for k in ("width", "height", "duration", "has_audio", "bytes")} == {
        k: a["clip"][k] for k in ("width", "height", "duration", "has_audio", "bytes")
    }
    full = [
        load_keyframes(_Store(tmp_path / d), s["keyframes"], full=True)
        for d, s in (("apart", a), ("fused", f))
    ]
    assert np.array_equal(*full)  # source-size frames: bit-identical
    small = [
        load_keyframes(_Store(tmp_path / d), s["keyframes"])
        for d, s in (("apart", a), ("fused", f))
    ]
    assert np.abs(small[0].astype(int) - small[1].astype(int)).mean() < 1.0  # JPEG + scaler
    with av.open(str(tmp_path / "fused" / f["clip"]["file"])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 100  # 4 s at 25 fps, every frame decodes


class _Store:
    def __init__(self, root):
        self.root = root

    def read_bytes(self, rel):
        return (self.root / rel).read_bytes()


def test_cheap_path_writes_audio_and_clip_in_one_process(source, tmp_path, monkeypatch):
    """With a filter after keyframes, keyframes seek, and the audio stage's pass writes the
    mp4 too (the filter itself is not run here: it keeps every clip)."""
    names = ("probe", "keyframes", "vl_filter", "audio", "clip")
    kwargs = {"vl_filter": {"threshold": 0.2}}
    stages = plan_media_pass([STAGES[n](**kwargs.get(n, {})) for n in names])
    stages = [s for s in stages if s.name != "vl_filter"]
    counts = _counters(monkeypatch)
    sample = _run(stages, tmp_path / "out", source)
    assert sum(c.calls for c in counts["ffmpeg"]) == 1  # audio + clip; keyframes seek (PyAV)
    assert sample.fields["keyframes"]["backend"] == "pyav"
    assert sample.fields["audio"]["num_samples"] == 4 * 16000
    assert sample.fields["clip"]["has_audio"] and sample.fields["clip"]["duration"] == 4.0


def test_a_changed_clip_setting_is_not_adopted(source, tmp_path, monkeypatch):
    """A clip the pass made with other settings (a resumed build) is encoded again."""
    stages = _stages(CHAIN, True)
    sample = _run(stages, tmp_path / "out", source)
    before = sample.fields["clip"]["bytes"]
    other = STAGES["clip"](crf=35)
    other.setup(StageContext(out=str(tmp_path / "out")))
    counts = _counters(monkeypatch)
    other.process(sample)
    assert sum(c.calls for c in counts["ffmpeg"]) == 1  # its own encode
    assert sample.fields["clip"]["bytes"] < before


def test_a_clip_without_audio_passes_once(tmp_path, monkeypatch):
    path = tmp_path / "mute.mp4"
    synth.make_clip(path, duration=2.0, audio=False)
    counts = _counters(monkeypatch)
    sample = _run(_stages(CHAIN, True), tmp_path / "out", path)
    assert sum(c.calls for c in counts["ffmpeg"]) == 1
    assert sample.fields["audio"] == {"present": False}
    assert sample.fields["clip"]["has_audio"] is False


def test_a_failed_pass_falls_back_to_the_separate_stages(source, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise vidal.media.ffmpeg.MediaError("ffmpeg_failed", "simulated")

    monkeypatch.setattr(vidal.stages.media_pass, "decode_once", broken)
    sample = _run(_stages(CHAIN, True), tmp_path / "out", source)
    assert sample.fields["keyframes"]["backend"] == "pyav"
    assert "media_pass" not in sample.fields
    assert sample.fields["audio"]["num_samples"] == 4 * 16000
    assert sample.fields["clip"]["duration"] == 4.0


def test_a_build_runs_one_ffmpeg_per_clip(clip_bank, tmp_path, monkeypatch, local_config):
    """vidal10m's media stages in a real (local) build: one ffmpeg per clip, and the tar
    holds each clip's mp4 and FLAC."""
    import tarfile

    from vidal.run.jobs import build

    src = tmp_path / "src"
    src.mkdir()
    for name in ("synth-000.mp4", "synth-001.mp4"):
        shutil.copy(clip_bank / name, src / name)
    counts = _counters(monkeypatch)
    config = local_config("shards=1", "stages=[probe,keyframes,audio,clip]", pipeline="vidal10m")
    assert build(config, str(src), str(tmp_path / "out"), quiet=True).failure is None
    assert sum(c.calls for c in counts["ffmpeg"]) == 2
    (tar,) = (tmp_path / "out").glob("shards/*.tar")
    with tarfile.open(tar) as t:
        exts = sorted(m.name.split(".", 1)[1] for m in t.getmembers())
    with_audio = 0
    for name in ("synth-000.mp4", "synth-001.mp4"):
        with av.open(str(src / name)) as c:
            with_audio += bool(c.streams.audio)
    assert exts.count("mp4") == 2 and exts.count("flac") == with_audio
