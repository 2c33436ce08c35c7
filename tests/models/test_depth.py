"""The depth wrapper: families, inference sizes, batching, the model's own preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from vidal.models.depth import DepthEstimator

RNG = np.random.default_rng(2)
LANDSCAPE = RNG.integers(0, 256, (8, 120, 160, 3), dtype=np.uint8)
PORTRAIT = RNG.integers(0, 256, (1, 160, 90, 3), dtype=np.uint8)
SMALL = LANDSCAPE[:, ::2, ::2]  # 60 x 80: the forward tests stay quick on CPU


@pytest.fixture(scope="module")
def models():
    return {f: DepthEstimator.load(f"tiny:{f}") for f in ("glpn", "dpt", "depth_anything")}


def counted(model) -> list:
    calls = []
    forward = model.forward
    model.forward = lambda pixels: calls.append(tuple(pixels.shape)) or forward(pixels)
    return calls


def test_metric_and_relative_families(models):
    assert not models["glpn"].relative  # GLPN-NYU: metres
    assert models["dpt"].relative and models["depth_anything"].relative  # inverse depth


def test_inference_sizes_follow_each_models_processor(models):
    glpn, dpt, anything = models["glpn"], models["dpt"], models["depth_anything"]
    assert glpn.input_size(120, 160) == (128, 160)  # the input's size, multiples of 32
    assert glpn.input_size(256, 455) == (256, 448)
    assert dpt.input_size(120, 160) == dpt.input_size(160, 90) == (64, 64)  # square only
    assert anything.input_size(120, 160) == (56, 70)  # short side 56, multiples of 14
    anything.inference_size = 70
    assert anything.input_size(160, 90) == (126, 70)
    anything.inference_size = 0


def test_one_forward_per_inference_shape_and_outputs_at_the_asked_sizes(models):
    glpn, dpt = models["glpn"], models["dpt"]
    calls = counted(glpn)
    out = glpn.predict([SMALL, SMALL[:3]], [(120, 160), (60, 80)])
    assert calls == [(11, 3, *glpn.input_size(60, 80))]  # both clips share one forward
    assert [o.shape for o in out] == [(8, 120, 160), (3, 60, 80)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)
    calls = counted(dpt)
    out = dpt.predict([LANDSCAPE, PORTRAIT], [(120, 160), (160, 90)])
    assert calls == [(9, 3, 64, 64)]  # square model: any aspect in one forward
    assert [o.shape for o in out] == [(8, 120, 160), (1, 160, 90)]


def test_batching_does_not_change_a_clips_depth(models):
    glpn = models["glpn"]
    together = glpn.predict([SMALL, SMALL[:2]], [(60, 80), (60, 80)])
    alone = glpn.predict([SMALL[:2]], [(60, 80)])[0]
    np.testing.assert_allclose(together[1], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["glpn", "dpt", "depth_anything"])
def test_pixels_are_prepared_like_the_models_image_processor(models, family):
    model = models[family]
    frames = np.repeat(np.repeat(LANDSCAPE[:1, ::8, ::8], 8, axis=1), 8, axis=2)  # smooth
    size = model.input_size(120, 160)
    ours = model._pixels(frames, size).numpy()
    theirs = model.processor(images=list(frames), return_tensors="np")["pixel_values"]
    if family == "glpn":  # GLPN's processor only floors to multiples of 32: 96 x 160
        ours = model._pixels(frames, theirs.shape[-2:]).numpy()
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() < 0.1
