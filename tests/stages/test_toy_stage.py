"""A stage is one file: a toy modality (each keyframe's mean colour) written to a file at test
time, registered by its decorator, reaches the config, the tar, the shard parquet, KEY.json and
the report with no edit anywhere else; and a stage from a `vidal.stages` entry point."""

from __future__ import annotations

import importlib
import io
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vidal.config import ConfigError
from vidal.io.store import Store
from vidal.report.html import write_report
from vidal.run.jobs import build
from vidal.stages import STAGES
from vidal.stages.keyframes import load_keyframes
from vidal.stages.registry import load_plugins

TOY = '''
"""colour: each keyframe's mean colour, stored as a tile per frame (tiled side by side)."""

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from vidal.stages.base import Stage, payload_path
from vidal.stages.keyframes import load_keyframes
from vidal.stages.outputs import Column, Histogram, Member, Outputs, Public
from vidal.stages.registry import register


@register
@dataclass
class ColourStage(Stage):
    name = "colour"
    outputs = Outputs(
        members=(
            Member("colour.png", "image/png", "uint8", frames=True, preview="tiles",
                   size_column="colour_bytes"),
        ),
        columns=(
            Column("mean_brightness", pa.float64(), "brightness",
                   Histogram("mean brightness (kept)", "0-255")),
        ),
        public=Public(),
        reads={"keyframes": ("file", "count")},
    )

    tile: int = 8  # side of each frame's tile, pixels

    def process(self, sample):
        frames = load_keyframes(self.store, sample.fields["keyframes"])
        means = frames.reshape(len(frames), -1, 3).mean(axis=1)
        tiles = np.repeat(np.rint(means).astype(np.uint8)[:, None, None], self.tile, axis=1)
        tiles = np.repeat(tiles, self.tile, axis=2)  # (N, tile, tile, 3)
        buf = io.BytesIO()
        Image.fromarray(np.concatenate(list(tiles), axis=1)).save(buf, format="PNG")
        rel = payload_path(self.name, sample, ".png")
        self.store.write_bytes(rel, buf.getvalue())
        sample.fields[self.name] = {
            "file": rel,
            "count": len(frames),
            "means": np.round(means, 3).tolist(),
            "brightness": float(means.mean()),
        }
'''


def _import_file(folder: Path, module: str, source: str):
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))


@pytest.fixture
def colour_stage(stage_registry, tmp_path):
    return _import_file(tmp_path / "plugin", "vidal_toy_colour", TOY).ColourStage


def test_a_stage_in_one_file_reaches_tar_parquet_json_and_report(
    colour_stage, src4, tmp_path, local_config
):
    assert STAGES["colour"] is colour_stage
    stages = "stages=[probe,keyframes,clip,colour]"
    config = local_config(stages, "shards=2", "keyframes.short_side=64", "colour.tile=4")
    assert config.colour.tile == 4 and type(config.colour.tile) is int  # a typed section
    out = tmp_path / "out"
    assert build(config, str(src4), str(out), quiet=True).failure is None

    samples = _read_tars(out)
    assert len(samples) == 4
    store = Store(str(out))
    for sample in samples:
        meta = json.loads(sample["json"])
        public = meta["colour"]
        assert set(public) == {"count", "means", "brightness"}  # its file is not public
        tiles = np.asarray(Image.open(io.BytesIO(sample["colour.png"])))
        assert tiles.shape == (4, 4 * public["count"], 3)
        # frame k's tile is the mean colour of keyframe k as the keyframes stage stored it
        frames = load_keyframes(store, _keyframes_fields(out, meta["key"]))
        expected = frames.reshape(len(frames), -1, 3).mean(axis=1)
        np.testing.assert_allclose(tiles[0, ::4].astype(float), expected, atol=0.51)

    rows = [r for p in sorted(out.glob("shards/*.parquet")) for r in pq.read_table(p).to_pylist()]
    schemas = {pq.read_schema(p) for p in out.glob("shards/*.parquet")}
    assert len(schemas) == 1  # one schema for every shard
    by_key = {json.loads(s["json"])["key"]: s for s in samples}
    for row in rows:
        meta = json.loads(by_key[row["key"]]["json"])
        assert row["mean_brightness"] == pytest.approx(meta["colour"]["brightness"])
        assert row["colour_bytes"] == len(by_key[row["key"]]["colour.png"])
        assert row["duration"] > 0 and row["mp4_bytes"] > 0  # the built-in columns stay

    page = Path(write_report(str(out), str(tmp_path / "report.html"), samples=10)).read_text()
    assert page.count("class='row colour'") == 4  # a row of colour tiles per sample shown
    assert page.count("class='row frames'") == 4
    assert "mean brightness (kept) · n=4" in page  # its histogram, from its column
    assert "class='problem'" not in page


def test_a_stage_that_reads_another_must_run_after_it(colour_stage, local_config):
    with pytest.raises(ConfigError, match="reads the fields of 'keyframes'"):
        local_config("stages=[probe,colour]")
    with pytest.raises(ConfigError, match="colour.tile"):
        local_config("stages=[probe,keyframes,colour]", "colour.tile=big")
    with pytest.raises(ConfigError, match="tilee"):
        local_config("colour.tilee=3")


def test_a_stage_from_an_entry_point(stage_registry, tmp_path, local_config):
    """A third-party package registers its stage by naming its module in `vidal.stages`."""
    site = tmp_path / "site"
    (site / "vidal_toy_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "vidal_toy_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vidal-toy-plugin\nVersion: 1.0\n"
    )
    (site / "vidal_toy_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[vidal.stages]\nnoop = vidal_toy_plugin\n"
    )
    (site / "vidal_toy_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from vidal.stages.base import Stage
            from vidal.stages.registry import register

            @register
            @dataclass
            class NoopStage(Stage):
                name = "noop"
                level: int = 1

                def process(self, sample):
                    pass
            """
        )
    )
    sys.path.insert(0, str(site))
    try:
        assert "noop" in load_plugins()
    finally:
        sys.path.remove(str(site))
    assert local_config("stages=[probe,noop]", "noop.level=3").noop.level == 3


def test_two_stages_cannot_claim_the_same_output(stage_registry, tmp_path):
    clash = TOY.replace('name = "colour"', 'name = "colour2"')
    _import_file(tmp_path, "vidal_toy_colour_a", TOY)
    with pytest.raises(ValueError, match="'colour2' declares .*, already declared"):
        _import_file(tmp_path, "vidal_toy_colour_b", clash)


def _read_tars(out: Path) -> list[dict]:
    """Every sample of the shards, read back with plain webdataset (no vidal reader)."""
    import webdataset as wds

    urls = [str(p) for p in sorted(out.glob("shards/*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False))


def _keyframes_fields(out: Path, key: str) -> dict:
    """The keyframes stage's fields of a sample, from its stage rows."""
    for path in sorted(out.glob("work/keyframes/*.parquet")):
        for record in pq.read_table(path).column("record").to_pylist():
            data = json.loads(record)
            if data["key"] == key:
                return data["fields"]["keyframes"]
    raise KeyError(key)
