"""`vidal export languagebind-wds`, read back with plain webdataset: every member name of
LanguageBind's new_loadvat.py layout, each decoding to the type and dtype it expects."""

from __future__ import annotations

import io
import json

import numpy as np
import webdataset as wds
from PIL import Image

from tests.io.conftest import shard_members, write_shard
from tests.io.test_export import ir_and_text_sample
from vidal.cli import main

TEXTS = {"raw.txt", "mplug.txt", "polish_mplug.txt", *(f"ofa{k}.txt" for k in range(8))}
FRAMES = {f"frm{k}.jpg" for k in range(8)}
WDS_META = {"__key__", "__url__", "__local_path__"}


def test_shards_hold_new_loadvat_members_with_their_types(lb_dataset, tmp_path):
    dest = tmp_path / "wds"
    args = ["export", "languagebind-wds", "--dataset", str(lb_dataset), "--to", str(dest)]
    assert main(args) == 0
    samples = shard_members(lb_dataset)
    shards = sorted(str(p) for p in dest.glob("languagebind-*.tar"))
    assert len(shards) == 2 and not list(dest.glob(".*"))
    seen = set()
    for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
        key = sample["__key__"]
        seen.add(key)
        assert set(sample) - WDS_META == TEXTS | FRAMES | {"tml0.jpg", "dep0.npy"}
        meta = json.loads(samples[key]["json"])
        for name in TEXTS:
            assert isinstance(sample[name], str) and sample[name]
        assert sample["polish_mplug.txt"].startswith("In the video, ")
        assert sample["raw.txt"] == meta["text"]["raw"]
        for name in FRAMES:
            image = sample[name]
            assert image.mode == "RGB" and min(image.size) == 256  # short side exactly 256
        assert sample["tml0.jpg"].mode == "RGB"
        depth = sample["dep0.npy"]
        tiles = np.asarray(Image.open(io.BytesIO(samples[key]["depth.png"])))
        width = meta["frames"]["width"]
        assert depth.dtype == np.uint16 and depth.ndim == 2  # millimetres
        assert np.array_equal(depth, tiles[:, :width])
    assert seen == set(samples)


def test_require_leaves_out_samples_without_the_modality(tmp_path, lb_dataset, capsys):
    with_ir = next(iter(shard_members(lb_dataset).values()))
    without = {k: v for k, v in with_ir.items() if k not in ("ir.png", "depth.png")}
    text_only = ir_and_text_sample()  # an undecodable clip: a per-sample error
    (tmp_path / "data" / "shards").mkdir(parents=True)
    samples = {"a": with_ir, "b": without, "c": text_only}
    write_shard(tmp_path / "data" / "shards" / "vidal-00000.tar", samples)
    dest = tmp_path / "wds"
    args = ["export", "languagebind-wds", "--dataset", str(tmp_path / "data"), "--to", str(dest)]
    assert main([*args, "--require", "thermal"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["left_out_no_thermal"] == 1 and report["errors_by_reason"] == {"not_media": 1}
    keys = [
        s["__key__"]
        for s in wds.WebDataset(str(dest / "languagebind-00000.tar"), shardshuffle=False)
    ]
    assert keys == ["a"]
