"""The infrared stage: 8-bit grayscale frames tiled exactly like the keyframes, frame k derived
from keyframe k, reproducible style seeds, clear failures for broken checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.models import model_config, model_dataset, rows
from vidal.config import ConfigError
from vidal.io.store import Store
from vidal.models import munit
from vidal.models.infrared import seed_for
from vidal.stages import STAGES, StageContext
from vidal.stages.infrared import InfraredStage, load_infrared
from vidal.stages.keyframes import load_keyframes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip_bank):
    return model_dataset(tmp_path_factory, clip_bank)[1]


@pytest.fixture
def scratch(dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dataset, out)
    return out, list(rows(out, "keyframes").values())


def setup_stage(out, **params):
    stage = InfraredStage(**{"model": "tiny:munit", "inference_size": 32, **params})
    stage.setup(StageContext(out=str(out)))
    return stage


def test_frames_are_tiled_like_the_keyframes_and_reruns_are_identical(scratch):
    out, samples = scratch
    store = Store(str(out))
    stage = setup_stage(out)
    assert stage.load_error is None
    done = stage.process_batch(samples)
    assert done and all(s.ok for s in done), [s.errors for s in done]
    first = {}
    for sample in done:
        fields = sample.fields["infrared"]
        keyframes = load_keyframes(store, sample.fields["keyframes"])
        assert fields["file"] == f"work/infrared/{sample.shard:05d}/{sample.key}.png"
        assert (fields["count"], fields["height"], fields["width"]) == keyframes.shape[:3]
        assert fields["style_seed"] == seed_for(sample.key, 0)
        assert fields["model"] == "tiny:munit" and fields["revision"].startswith("sha256:")
        assert fields["kind"] == "munit"
        h, w = keyframes.shape[1:3]
        assert fields["inference_size"] == [32, round(w * 32 / h / 4) * 4]
        frames = load_infrared(store, fields)
        assert frames.shape == keyframes.shape[:3] and frames.dtype == np.uint8
        first[sample.key] = store.read_bytes(fields["file"])
    # a rerun (a fresh worker, other batch composition) writes the same bytes
    again = setup_stage(out)
    redone = again.process_batch(list(reversed(rows(out, "keyframes").values()))[:2])
    for sample in redone:
        assert Store(str(out)).read_bytes(sample.fields["infrared"]["file"]) == first[sample.key]
    # another config seed, another style
    other = setup_stage(out, seed=7).process_batch(list(rows(out, "keyframes").values())[:1])[0]
    assert other.fields["infrared"]["style_seed"] == seed_for(other.key, 7)
    assert Store(str(out)).read_bytes(other.fields["infrared"]["file"]) != first[other.key]


def test_with_an_identity_translator_frame_k_is_keyframe_k(scratch):
    out, samples = scratch
    store = Store(str(out))
    h = load_keyframes(store, samples[0].fields["keyframes"]).shape[1]
    stage = setup_stage(out, inference_size=h, output_short_side=h)
    stage.net.forward = lambda x, styles=None: x  # RGB in [-1, 1] passes through
    for sample in stage.process_batch(samples[:2]):
        keyframes = load_keyframes(store, sample.fields["keyframes"])
        gray = keyframes.astype(float).mean(axis=3)
        frames = load_infrared(store, sample.fields["infrared"]).astype(float)
        errors = np.abs(frames[:, None] - gray[None]).mean(axis=(2, 3))  # [ir k, keyframe j]
        assert errors.diagonal().max() < 3.0, errors.diagonal()
        n = len(gray)
        assert all(errors[k, k] <= errors[k].min() + 1e-9 for k in range(n))  # k matches k best
        assert (errors > errors.diagonal()[:, None] + 1.0).any()  # and the frames do differ


def test_output_is_shrunk_to_the_short_side_keeping_the_tile_geometry(scratch):
    out, samples = scratch
    stage = setup_stage(out, output_short_side=60)
    sample = stage.process_batch(samples[:1])[0]
    fields = sample.fields["infrared"]
    kf = sample.fields["keyframes"]
    frames = load_infrared(Store(str(out)), fields)
    assert fields["height"] == 60 and frames.shape == (kf["count"], 60, fields["width"])
    assert abs(fields["width"] / 60 - kf["width"] / kf["height"]) < 0.05


def test_pix2pix_translator_runs_in_the_stage(scratch):
    out, samples = scratch
    stage = setup_stage(out, model="tiny:pix2pix")
    sample = stage.process_batch(samples[:1])[0]
    assert sample.ok, sample.errors
    fields = sample.fields["infrared"]
    assert fields["kind"] == "pix2pix" and fields["style_seed"] is None
    assert fields["inference_size"][0] % 8 == 0


def test_a_checkpoint_with_wrong_keys_fails_every_sample_naming_them(scratch, tmp_path):
    out, samples = scratch
    gen = munit.AdaINGen(3, munit.TINY)
    state = dict(gen.state_dict())
    state["enc_content.bogus"] = torch.zeros(1)
    path = tmp_path / "translation_weights.pt"
    torch.save({"a": state, "b": gen.state_dict()}, path)
    stage = setup_stage(out, model=str(path))
    assert stage.load_error[0] == "model_load_failed"
    assert "enc_content.bogus" in stage.load_error[1] and str(path) in stage.load_error[1]
    done = stage.process_batch(samples[:2])
    assert all(not s.ok and "enc_content.bogus" in s.errors["infrared"] for s in done)
    missing = setup_stage(out, model=str(tmp_path / "nope.pt"))
    assert missing.load_error[0] == "model_unavailable"


def test_config_registers_and_checks_the_stage():
    assert STAGES["infrared"] is InfraredStage
    config = model_config("stages=[probe,keyframes,infrared]", "infrared.model=tiny:munit")
    assert config.infrared.model == "tiny:munit"
    with pytest.raises(ConfigError, match="infrared.model"):
        model_config("infrared.model=tiny:nope")
    with pytest.raises(ConfigError, match="infrared.precision"):
        model_config("infrared.precision=fp8")
