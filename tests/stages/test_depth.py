"""The depth stage: lossless uint16 millimetres, tiles aligned with the keyframes, sanity
checks as per-sample errors, relative models, odd videos, inside a real build."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models import model_config, model_dataset, rows
from vidal.io.store import Store
from vidal.media import synth
from vidal.media.ffmpeg import MediaError, run_ffmpeg
from vidal.models.depth import DepthEstimator
from vidal.run.jobs import build
from vidal.stages import StageContext
from vidal.stages.depth import (
    DepthStage,
    check_maps,
    encode_metric,
    encode_png,
    encode_relative,
    load_depth,
)
from vidal.stages.keyframes import load_keyframes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_bank):
    return model_dataset(tmp_path_factory, clip_bank)[1]


@pytest.fixture
def scratch(dataset, tmp_path):
    """A copy of the dataset a test may write into, and its keyframed samples."""
    out = tmp_path / "out"
    shutil.copytree(dataset, out)
    return out, list(rows(out, "keyframes").values())


def run_stage(out, samples, **params):
    stage = DepthStage(**{"model": "tiny:glpn", **params})
    stage.setup(StageContext(out=str(out)))
    return stage, stage.process_batch(samples)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_millimetres_survive_the_png_round_trip():
    metres = np.array([[[-1.0, 0.0, 0.0004, 0.0006], [1.2345, 9.9996, 10.0, 25.0]]])
    mm, extra = encode_metric(metres, 10.0)
    assert mm.tolist() == [[[0, 0, 0, 1], [1234, 10000, 10000, 10000]]]
    assert (extra["min_mm"], extra["max_mm"], extra["encoding"]) == (0, 10000, "mm")
    full = np.random.default_rng(3).integers(0, 65536, (64, 8 * 48), dtype=np.uint16)
    back = decode(encode_png(full))
    assert back.dtype == np.uint16 and np.array_equal(back, full)


def test_relative_depth_fills_uint16_and_records_its_scale():
    inverse = np.random.default_rng(4).normal(3.0, 1.0, (8, 12, 16)).astype(np.float32)
    values, extra = encode_relative(inverse)
    assert values.min() == 0 and values.max() == 65535 and extra["encoding"] != "mm"
    lo, hi = extra["scale"]
    restored = lo + values / 65535 * (hi - lo)
    np.testing.assert_allclose(restored, inverse, atol=(hi - lo) / 65535)


def test_a_constant_map_is_an_error_unless_its_frame_is_blank():
    frames = np.random.default_rng(5).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    frames[0] = 0  # a black fade-in frame
    depth = np.random.default_rng(6).uniform(1, 5, (3, 8, 8))
    depth[0] = 2.0
    check_maps(depth, frames)  # a flat map of a flat frame is the honest answer
    depth[2] = 3.0
    with pytest.raises(MediaError, match=r"depth_constant: constant depth map .* \[2\]"):
        check_maps(depth, frames)


def test_build_writes_one_tiled_png_per_sample_in_keyframe_geometry(dataset):
    store = Store(str(dataset))
    samples = rows(dataset, "depth")
    assert samples and all(s.ok for s in samples.values())
    for sample in samples.values():
        frames, depth = sample.fields["keyframes"], sample.fields["depth"]
        image = decode(store.read_bytes(depth["file"]))
        assert image.dtype == np.uint16
        assert image.shape == (frames["height"], frames["count"] * frames["width"])
        assert (depth["height"], depth["width"], depth["count"]) == (
            frames["height"],
            frames["width"],
            frames["count"],
        )
        assert (image.min(), image.max()) == (depth["min_mm"], depth["max_mm"])
        assert 0 <= depth["min_mm"] < depth["max_mm"] <= 10000 and not depth["relative"]
        assert load_depth(store, depth).shape == (8, frames["height"], frames["width"])


def test_the_shards_carry_the_same_png_as_key_depth_png(dataset):
    store, samples = Store(str(dataset)), rows(dataset, "depth")
    seen = 0
    for tar_path in sorted((dataset / "shards").glob("vidal-*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".depth.png"):
                    key = member.name[: -len(".depth.png")]
                    stored = store.read_bytes(samples[key].fields["depth"]["file"])
                    assert tar.extractfile(member).read() == stored
                    seen += 1
    assert seen == len(samples)


def test_depth_tile_k_comes_from_keyframe_k(scratch, monkeypatch):
    """With the model replaced by 'depth = image brightness' (GLPN input is rescaled to 0-1,
    so metres 0-1), each depth tile must reproduce its own keyframe and no other."""
    out, samples = scratch
    monkeypatch.setattr(DepthEstimator, "forward", lambda self, pixels: pixels.mean(dim=1))
    stage, done = run_stage(out, samples)
    store = Store(str(out))
    for sample in done:
        assert sample.ok, sample.errors
        frames = load_keyframes(store, sample.fields["keyframes"]).astype(np.float32)
        expected = frames.mean(axis=3) / 255 * 1000  # mm
        depth = load_depth(store, sample.fields["depth"]).astype(np.float32)
        for k in range(len(frames)):
            errors = [np.abs(depth[k] - expected[j]).mean() for j in range(len(frames))]
            assert errors[k] < 15  # resampling only
            assert errors[k] == min(errors)


def test_one_forward_for_the_whole_batch(scratch, monkeypatch):
    out, samples = scratch
    calls = []
    original = DepthEstimator.forward
    monkeypatch.setattr(
        DepthEstimator, "forward", lambda self, px: calls.append(len(px)) or original(self, px)
    )
    run_stage(out, samples, inference_size=64)
    assert calls == [8 * len(samples)]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (lambda px: torch.full(px[:, 0].shape, float("nan")), "depth_nan"),
        (lambda px: torch.ones(px[:, 0].shape), "depth_constant"),
    ],
)
def test_nan_and_constant_maps_are_per_sample_errors(scratch, monkeypatch, output, reason):
    out, samples = scratch
    monkeypatch.setattr(DepthEstimator, "forward", lambda self, px: output(px))
    _, done = run_stage(out, samples, inference_size=64)
    assert {s.errors["depth"].split(":")[0] for s in done} == {reason}
    assert not list((out / "work" / "depth").glob("*/*.png.tmp*"))


@pytest.mark.parametrize("family", ["dpt", "depth_anything"])
def test_relative_models_store_min_max_inverse_depth(scratch, family):
    out, samples = scratch
    stage, done = run_stage(out, samples[:2], model=f"tiny:{family}")
    store = Store(str(out))
    for sample in done:
        fields = sample.fields["depth"]
        assert fields["relative"] and fields["encoding"] == "inverse_depth_minmax"
        assert fields["min_mm"] is None and len(fields["scale"]) == 2
        values = load_depth(store, fields)
        assert values.min() == 0 and values.max() == 65535
        frames = load_keyframes(store, sample.fields["keyframes"])
        raw = stage.net.predict([frames], [frames.shape[1:3]])[0]
        lo, hi = fields["scale"]
        np.testing.assert_allclose(lo + values / 65535 * (hi - lo), raw, atol=(hi - lo) / 60000)


def test_odd_videos_through_both_model_stages(tmp_path):
    src = tmp_path / "src"
    synth.make_gray_or_10bit(src / "gray.mkv", "gray")
    synth.make_gray_or_10bit(src / "tenbit.mp4", "yuv420p10le")
    synth.make_one_frame_video(src / "oneframe.mp4")
    black = ["-f", "lavfi", "-i", "color=c=black:s=96x64:r=10:d=1", "-c:v", "libx264"]
    run_ffmpeg([*black, "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src / "black.mp4")])
    out = tmp_path / "out"
    outcome = build(model_config("shards=1"), str(src), str(out), quiet=True)
    assert outcome.failure is None
    done = {s.key.split("-")[0]: s for s in rows(out, "depth").values()}
    for name in ("gray", "tenbit", "oneframe"):
        assert done[name].ok, done[name].errors
        assert "score" in done[name].fields["vl_filter"]
        assert done[name].fields["depth"]["count"] == 8
    # a black frame shows no depth: GLPN's map of it is constant, so the sample fails alone
    assert "score" in done["black"].fields["vl_filter"]
    assert done["black"].errors["depth"].startswith("depth_constant: every depth map")
    stats = json.loads((out / "shards" / "vidal-00000.stats.json").read_text())
    assert stats["kept"] == 3 and stats["errors"] == {"depth: depth_constant": 1}
