"""pix2pix: `vidal train-infrared` on a tiny paired set (LLVIP's layout) learns, writes a
checkpoint the loader reads, and broken checkpoints give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidal.cli import main
from vidal.models import pix2pix
from vidal.models.infrared import InfraredTranslator
from vidal.models.munit import CheckpointKeyError
from vidal.train.infrared import find_pairs, l1_loss, train_pix2pix


def thermal_of(rgb: np.ndarray) -> np.ndarray:
    """The synthetic 'thermal' image: inverted grayscale."""
    return (255 - rgb.mean(axis=2)).astype(np.uint8)


def make_pairs(folder, n: int, seed: int, size=(48, 40)):
    """Smooth random RGB images (blobs) and their thermal twins, LLVIP's folder layout."""
    rng = np.random.default_rng(seed)
    (folder / "visible").mkdir(parents=True)
    (folder / "infrared").mkdir(parents=True)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.float32) + rng.uniform(0, 255, 3)
        for _ in range(3):
            cx, cy, r = rng.uniform(0, size[0]), rng.uniform(0, size[1]), rng.uniform(5, 15)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - blob) + rng.uniform(0, 255, 3) * blob
        rgb = img.clip(0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / "visible" / f"{i:04d}.jpg", quality=95)
        Image.fromarray(thermal_of(rgb)).save(folder / "infrared" / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("pix2pix")
    train = make_pairs(base / "train", 24, seed=0)
    held = make_pairs(base / "held", 6, seed=1)
    out = base / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only contend on busy cores
    try:
        code = main(
            [
                "train-infrared",
                "--pairs",
                str(train),
                "--out",
                str(out),
                "--steps",
                "40",
                "--size",
                "32",
                "--batch-size",
                "4",
                "--lr",
                "2e-3",
                "--ngf",
                "8",
                "--depth",
                "3",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out, held


def test_find_pairs_matches_stems_across_extensions(tmp_path):
    folder = make_pairs(tmp_path / "p", 3, seed=2)
    (folder / "visible" / "lonely.png").write_bytes((folder / "visible" / "0000.jpg").read_bytes())
    pairs = find_pairs(folder)
    assert [(v.name, i.name) for v, i in pairs] == [
        (f"000{k}.jpg", f"000{k}.png") for k in range(3)
    ]
    with pytest.raises(FileNotFoundError, match="visible/NAME"):
        find_pairs(tmp_path / "nothing")


def test_training_lowers_held_out_l1_and_writes_a_loadable_checkpoint(trained):
    out, held = trained
    path = out / "pix2pix.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format"] == pix2pix.FORMAT and ckpt["step"] == 40
    assert json.loads((out / "train_infrared.json").read_text())["steps"] == 40
    assert not list(out.glob("*.tmp-*"))  # written atomically
    pairs = find_pairs(held)
    torch.manual_seed(0)
    untrained = pix2pix.build_generator(ckpt["config"])
    before = l1_loss(untrained, pairs, 32)
    after = l1_loss(pix2pix.load_checkpoint(path), pairs, 32)
    assert after < 0.6 * before, (before, after)
    net = InfraredTranslator.load(str(path), "fp32", inference_size=32, device="cpu")
    assert net.kind == "pix2pix" and net.multiple == 8
    assert InfraredTranslator.load(str(out), "fp32", device="cpu").kind == "pix2pix"
    rgb = np.asarray(Image.open(pairs[0][0]).convert("RGB"))
    frame = net.translate([rgb[None]], [rgb.shape[:2]], [0])[0][0]
    assert frame.shape == rgb.shape[:2] and frame.dtype == np.uint8
    # it learned the inverted grayscale, roughly
    err = np.abs(frame.astype(float) - thermal_of(rgb)).mean()
    assert err < 60, err


def test_a_checkpoint_with_wrong_keys_names_them(tmp_path):
    gen = pix2pix.build_generator(pix2pix.TINY)
    state = dict(gen.state_dict())
    state["head.0.extra"] = torch.zeros(1)
    path = tmp_path / "pix2pix.pt"
    torch.save({"format": pix2pix.FORMAT, "config": pix2pix.TINY, "generator": state}, path)
    with pytest.raises(CheckpointKeyError, match=r"unexpected keys: head\.0\.extra") as err:
        pix2pix.load_checkpoint(path)
    assert str(path) in str(err.value)


def test_train_rejects_sizes_the_unet_cannot_take(tmp_path):
    folder = make_pairs(tmp_path / "p", 2, seed=3)
    with pytest.raises(ValueError, match="multiple of 16"):
        train_pix2pix(folder, tmp_path / "o", steps=1, size=40)
