"""Model stages read frames at their model's resolution (the paper-exact recipe): depth on the
full frames resized to 448x796 in fp32, infrared on 400x640 frames with a style per frame and
each output frame min-max normalised, 3 channels; the keyframes stay at short side 256."""

from __future__ import annotations

import numpy as np
import pytest

from vidal.io.store import Store
from vidal.media import synth
from vidal.sample import Sample
from vidal.stages import StageContext
from vidal.stages.depth import DepthStage, load_depth
from vidal.stages.infrared import InfraredStage, load_infrared
from vidal.stages.keyframes import KeyframesStage, load_keyframes
from vidal.stages.probe import ProbeStage

N = 2  # frames per clip


@pytest.fixture(scope="module")
def keyframed(tmp_path_factory):
    """A landscape 640x360 clip through probe and keyframes (full frames kept); 2 frames, as
    the models at the paper's input sizes are slow on a CPU."""
    folder = tmp_path_factory.mktemp("model_inputs")
    synth.make_clip(folder / "wide.mp4", duration=1.0, width=640, height=360, fps=12, audio=False)
    out = folder / "out"
    ctx = StageContext(out=str(out))
    batch = [Sample(key="wide", shard=0, source=str(folder / "wide.mp4"))]
    for stage in (
        ProbeStage(),
        KeyframesStage(num_frames=N, indices="languagebind_gen", full_frames=True, short_side=256),
    ):
        stage.setup(ctx)
        batch = stage.process_batch(batch)
    assert batch[0].ok, batch[0].errors
    return out, batch


def _copy(batch):
    return [Sample.from_json(s.to_json()) for s in batch]


def test_keyframes_keep_both_sizes(keyframed):
    out, batch = keyframed
    fields = batch[0].fields["keyframes"]
    assert (fields["height"], fields["width"]) == (256, 455)
    assert (fields["full"]["height"], fields["full"]["width"]) == (360, 640)
    assert fields["index_rule"] == "languagebind_gen" and fields["indices"] == [
        0,
        6,
    ]  # i * (12 // 2)
    full = load_keyframes(Store(str(out)), fields, full=True)
    assert full.shape == (N, 360, 640, 3)


def test_depth_runs_on_full_frames_at_448x796_and_returns_keyframe_sized_maps(keyframed):
    out, batch = keyframed
    stage = DepthStage(
        model="tiny:glpn", frames="full", input_hw=[448, 796], precision="fp32", batch_size=8
    )
    stage.setup(StageContext(out=str(out)))
    seen = []
    forward = stage.net.forward
    stage.net.forward = lambda pixels: seen.append(tuple(pixels.shape)) or forward(pixels)
    done = stage.process_batch(_copy(batch))[0]
    assert done.ok, done.errors
    depth = done.fields["depth"]
    assert seen == [(N, 3, 448, 768)]  # 448x796, floored to GLPN's multiple of 32
    assert depth["input_frames"] == [360, 640] and depth["inference_size"] == [448, 768]
    maps = load_depth(Store(str(out)), depth)
    assert maps.shape == (N, 256, 455) and maps.dtype == np.uint16
    assert maps.max() <= 10_000 and len(np.unique(maps)) > 1  # clipped at 10 m, not constant
    # without the full frames stored, the stage says what to set
    bare = _copy(batch)
    del bare[0].fields["keyframes"]["full"]
    assert stage.process_batch(bare)[0].errors["depth"].startswith("no_full_frames")


def test_infrared_paper_recipe(keyframed):
    out, batch = keyframed
    params = dict(model="tiny:munit", frames="full", input_hw=[400, 640], style="per_frame")
    stage = InfraredStage(**params, normalize="minmax", channels=3)
    stage.setup(StageContext(out=str(out)))
    seen = []
    forward = stage.net.forward
    stage.net.forward = lambda x, styles=None: seen.append((x.shape, styles)) or forward(x, styles)
    done = stage.process_batch(_copy(batch))[0]
    assert done.ok, done.errors
    fields = done.fields["infrared"]
    (shape, styles) = seen[0]
    assert tuple(shape) == (N, 3, 400, 640) and fields["inference_size"] == [400, 640]
    assert len({tuple(s.flatten().tolist()) for s in styles}) == N  # a style per frame
    frames = load_infrared(Store(str(out)), fields, rgb=True)
    assert frames.shape == (N, 256, 455, 3)
    # min-max per frame: every frame spans (nearly) the full range on its own, before the
    # bilinear resize to the output size softens the extremes a little
    assert all(f.min() <= 10 and f.max() >= 245 for f in frames)
    assert (fields["style"], fields["normalize"], fields["channels"]) == ("per_frame", "minmax", 3)
    # the same seed gives the same styles: a rerun writes the same bytes
    again = InfraredStage(**params, normalize="minmax", channels=3)
    again.setup(StageContext(out=str(out)))
    redo = again.process_batch(_copy(batch))[0]
    assert np.array_equal(load_infrared(Store(str(out)), redo.fields["infrared"], rgb=True), frames)


def test_infrared_default_keeps_one_style_per_clip(keyframed):
    out, batch = keyframed
    stage = InfraredStage(model="tiny:munit", inference_size=64)
    stage.setup(StageContext(out=str(out)))
    styles = stage.net.styles(5, 8, per_frame=False)
    assert all(np.array_equal(styles[0], s) for s in styles)
    per_frame = stage.net.styles(5, 8, per_frame=True)
    assert not np.array_equal(per_frame[0], per_frame[1])
    assert np.array_equal(per_frame, stage.net.styles(5, 8, per_frame=True))
    assert stage.process_batch(_copy(batch))[0].fields["infrared"]["channels"] == 1
