"""MUNIT's AdaIN generator: sRGB-TIR's key layout (names and shapes derived from the
architecture rules of MUNIT's networks.py and sRGB-TIR's tir2rgb_folder.yaml), strict loading
with clear errors, and the RGB -> thermal path."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from vidal.models import munit
from vidal.models.infrared import InfraredTranslator, seed_for

GEN = dict(munit.SRGB_TIR)  # dim 64, mlp_dim 256, style_dim 8, relu, 2 down, 4 res, reflect


def expected_keys(dim=64, style_dim=8, mlp_dim=256, n_down=2, n_res=4) -> dict:
    """{key: shape} of MUNIT's AdaINGen(3, gen) written out from the architecture rules."""
    keys = {}

    def conv(prefix, cin, cout, k):
        keys[f"{prefix}.conv.weight"] = (cout, cin, k, k)
        keys[f"{prefix}.conv.bias"] = (cout,)

    # style encoder: 7x7, 2 downsamples doubling dim, 2 more at that dim, pool, 1x1 conv
    d = dim
    conv("enc_style.model.0", 3, d, 7)
    for i in (1, 2):
        conv(f"enc_style.model.{i}", d, 2 * d, 4)
        d *= 2
    for i in (3, 4):
        conv(f"enc_style.model.{i}", d, d, 4)
    keys["enc_style.model.6.weight"] = (style_dim, d, 1, 1)  # 5: AdaptiveAvgPool2d
    keys["enc_style.model.6.bias"] = (style_dim,)
    # content encoder: 7x7, n_down 4x4 stride-2 ('in': no parameters), ResBlocks
    d = dim
    conv("enc_content.model.0", 3, d, 7)
    for i in range(1, n_down + 1):
        conv(f"enc_content.model.{i}", d, 2 * d, 4)
        d *= 2
    for r in range(n_res):
        for j in (0, 1):
            conv(f"enc_content.model.{n_down + 1}.model.{r}.model.{j}", d, d, 3)
    # decoder: AdaIN ResBlocks (dummy running stats), (Upsample, 5x5 conv + LayerNorm) x n_down
    adain = 0
    for r in range(n_res):
        for j in (0, 1):
            prefix = f"dec.model.0.model.{r}.model.{j}"
            conv(prefix, d, d, 3)
            keys[f"{prefix}.norm.running_mean"] = (d,)
            keys[f"{prefix}.norm.running_var"] = (d,)
            adain += 2 * d
    for u in range(n_down):
        prefix = f"dec.model.{2 + 2 * u}"
        conv(prefix, d, d // 2, 5)
        keys[f"{prefix}.norm.gamma"] = (d // 2,)
        keys[f"{prefix}.norm.beta"] = (d // 2,)
        d //= 2
    conv(f"dec.model.{1 + 2 * n_down}", d, 3, 7)
    # MLP: style_dim -> mlp_dim -> mlp_dim -> AdaIN parameters
    for i, (cin, cout) in enumerate([(style_dim, mlp_dim), (mlp_dim, mlp_dim), (mlp_dim, adain)]):
        keys[f"mlp.model.{i}.fc.weight"] = (cout, cin)
        keys[f"mlp.model.{i}.fc.bias"] = (cout,)
    return keys


@pytest.fixture(scope="module")
def srgb_tir_weights(tmp_path_factory):
    """A randomly initialised pair of generators saved in sRGB-TIR's layout."""
    torch.manual_seed(0)
    gen_a, gen_b = munit.AdaINGen(3, GEN), munit.AdaINGen(3, GEN)
    path = tmp_path_factory.mktemp("srgb_tir") / "translation_weights.pt"
    munit.save_translation_weights(path, gen_a, gen_b)
    return path, gen_a, gen_b


def test_parameter_names_and_shapes_match_the_published_config():
    got = {k: tuple(v.shape) for k, v in munit.AdaINGen(3, GEN).state_dict().items()}
    want = expected_keys()
    assert got == want
    counts = collections.Counter(k.split(".")[0] for k in got)
    assert counts == {"enc_style": 12, "enc_content": 22, "dec": 42, "mlp": 6}
    assert got["enc_content.model.0.conv.weight"] == (64, 3, 7, 7)
    assert got["dec.model.5.conv.weight"] == (3, 64, 7, 7)  # after 256 -> 128 -> 64
    assert got["mlp.model.2.fc.weight"] == (4096, 256)  # 2 x 256 x (2 x 4 ResBlock convs)
    assert "dec.model.0.model.0.model.0.norm.running_mean" in got  # AdaIN's dummy buffers
    assert not any(k.endswith("norm.weight") for k in got)  # AdaIN weight comes from the MLP


def test_translation_weights_round_trip_strictly(srgb_tir_weights):
    path, gen_a, gen_b = srgb_tir_weights
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"a", "b"} and set(raw["a"]) == set(expected_keys())
    loaded_a, loaded_b = munit.load_translation_weights(path)
    for mine, theirs in ((loaded_a, gen_a), (loaded_b, gen_b)):
        for k, v in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[k], v), k


def test_wrong_keys_give_an_error_naming_them(srgb_tir_weights, tmp_path):
    path, gen_a, gen_b = srgb_tir_weights
    a = dict(gen_a.state_dict())
    a["dec.extra.weight"] = torch.zeros(1)
    del a["mlp.model.2.fc.bias"]
    bad = tmp_path / "bad.pt"
    torch.save({"a": a, "b": gen_b.state_dict()}, bad)
    with pytest.raises(munit.CheckpointKeyError) as err:
        munit.load_translation_weights(bad)
    msg = str(err.value)
    assert str(bad) in msg and "['a']" in msg
    assert "missing keys: mlp.model.2.fc.bias" in msg
    assert "unexpected keys: dec.extra.weight" in msg
    # wrong shapes (a different config) and a file without 'a'/'b' say so too
    small = munit.AdaINGen(3, munit.TINY)
    torch.save({"a": small.state_dict(), "b": small.state_dict()}, bad)
    with pytest.raises(munit.CheckpointKeyError, match="wrong shapes: enc_style.model.0"):
        munit.load_translation_weights(bad)
    torch.save({"gen": a}, bad)
    with pytest.raises(munit.CheckpointKeyError, match="needs state dicts 'a' and 'b'"):
        munit.load_translation_weights(bad)


def test_tracked_instance_norm_buffers_of_older_munit_are_accepted(tmp_path):
    gen = munit.AdaINGen(3, munit.TINY)
    state = dict(gen.state_dict())
    state["enc_content.model.1.norm.running_mean"] = torch.zeros(16)
    state["enc_content.model.1.norm.running_var"] = torch.ones(16)
    state["enc_content.model.1.norm.num_batches_tracked"] = torch.tensor(0)
    munit.load_strict(munit.AdaINGen(3, munit.TINY), state, "x")
    state["dec.model.2.norm.running_mean"] = torch.zeros(4)  # LayerNorm has none: still an error
    with pytest.raises(munit.CheckpointKeyError, match="dec.model.2.norm.running_mean"):
        munit.load_strict(munit.AdaINGen(3, munit.TINY), state, "x")


def test_rgb_to_thermal_uses_b_content_and_a_decoder():
    torch.manual_seed(1)
    gen_a, gen_b = munit.AdaINGen(3, munit.TINY).eval(), munit.AdaINGen(3, munit.TINY).eval()
    x = torch.rand(3, 3, 32, 48) * 2 - 1
    s = torch.randn(3, 8, 1, 1)
    with torch.inference_mode():
        y = munit.rgb_to_thermal(gen_a, gen_b, x, s)
        assert y.shape == x.shape and y.abs().max() <= 1
        assert torch.allclose(y, gen_a.decode(gen_b.enc_content(x), s))
        # per-image normalisation: a frame's output does not depend on its batch
        alone = munit.rgb_to_thermal(gen_a, gen_b, x[1:2], s[1:2])
        assert torch.allclose(alone, y[1:2], atol=1e-5)
        # the style code matters
        other = munit.rgb_to_thermal(gen_a, gen_b, x[1:2], torch.randn(1, 8, 1, 1))
        assert not torch.allclose(other, alone)


def test_loader_reads_the_published_layout_and_translates(srgb_tir_weights):
    path, _, _ = srgb_tir_weights
    net = InfraredTranslator.load(str(path), "fp32", inference_size=32, device="cpu")
    assert net.kind == "munit" and net.revision.startswith("sha256:") and net.multiple == 4
    assert net.input_size(120, 160) == (32, 44)  # short side 32, multiples of 4
    assert InfraredTranslator.load(str(path.parent), "fp32", device="cpu").ref == str(path.parent)
    assert net.input_size(400, 640) != (400, 640) and net.inference_size == 32
    default = InfraredTranslator.load("tiny:munit", "fp32", device="cpu")
    assert default.input_size(400, 640) == (400, 640)  # LanguageBind's size is the default
    clip = np.random.default_rng(0).integers(0, 255, (2, 40, 60, 3), dtype=np.uint8)
    out = net.translate([clip], [(40, 60)], [seed_for("k", 0)])[0]
    assert out.shape == (2, 40, 60) and out.dtype == np.uint8
    again = net.translate([clip], [(40, 60)], [seed_for("k", 0)])[0]
    assert np.array_equal(out, again)
