"""The shard writer over the stages' declarations: the parquet columns and KEY.json keys users
read stay, and a stage's column that cannot be computed fails one sample, not the shard."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from vidal.io.shards import (
    TAR_MTIME,
    list_tar_keys,
    open_tar,
    pack_shard,
    sample_json,
    shard_schema,
    write_members,
)
from vidal.io.store import Store
from vidal.sample import Sample
from vidal.stages.base import Stage
from vidal.stages.outputs import Column, Outputs
from vidal.stages.registry import register

STRINGS, INTS = pa.list_(pa.string()), pa.list_(pa.int64())
COLUMNS = {
    "key": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "error_reason": pa.string(),
    "dropped": pa.string(),
    "source": pa.string(),
    "title": pa.string(),
    "duration": pa.float64(),
    "width": pa.int64(),
    "height": pa.int64(),
    "fps": pa.float64(),
    "has_audio": pa.bool_(),
    "frame_indices": INTS,
    "caption": pa.string(),
    "caption_chars": pa.int64(),
    "mp4_bytes": pa.int64(),
    "flac_bytes": pa.int64(),
    "sample_bytes": pa.int64(),
    "vl_score": pa.float64(),
    "vl_score_max": pa.float64(),
    "depth_min_mm": pa.float64(),
    "depth_max_mm": pa.float64(),
    "caption_views": STRINGS,
    "guardrail_rejections": STRINGS,
}


def test_the_parquet_keeps_the_columns_users_read():
    schema = shard_schema()
    assert {name: schema.field(name).type for name in COLUMNS} == COLUMNS
    assert schema.names[:5] == ["key", "status", "error", "error_reason", "dropped"]
    assert shard_schema() == schema  # built the same way every time


def test_key_json_keeps_its_keys_for_a_sample_no_stage_reached():
    doc = sample_json(Sample(key="k", shard=0, source="/x.mp4", meta={"title": "t"}), "raw")
    assert set(doc) == {
        *("key", "source", "title", "hashtags", "text", "caption_view", "extra", "errors"),
        *("lineage", "source_video", "frames", "clip", "audio", "vl_filter", "depth"),
        *("infrared", "dedup"),
    }
    assert doc["audio"] == {"present": False} and doc["text"] == {"raw": "t"}
    assert doc["source_video"]["duration"] is None and doc["clip"] == {}


def test_a_column_that_raises_fails_its_sample_not_the_shard(stage_registry, tmp_path):
    @register
    @dataclass
    class Fragile(Stage):
        name = "fragile"
        outputs = Outputs(columns=(Column("word_len", pa.int64(), lambda s: len(s.meta["w"])),))

    store = Store(str(tmp_path))
    good = Sample(key="good", shard=0, source="/g.mp4", meta={"w": "abc"})
    bad = Sample(key="bad", shard=0, source="/b.mp4")  # no "w": the column's function raises
    records = [s.to_json() for s in (good, bad)]
    store.write_table("work/x/00000.parquet", pa.table({"key": ["good", "bad"], "record": records}))
    stats = pack_shard(str(tmp_path), 0, "work/x/00000.parquet", "raw", "fp")
    rows = pq.read_table(tmp_path / "shards" / "vidal-00000.parquet").to_pylist()
    by_key = {r["key"]: r for r in rows}
    assert by_key["good"]["status"] == "ok" and by_key["good"]["word_len"] == 3
    assert by_key["bad"]["status"] == "failed"
    assert by_key["bad"]["error_reason"] == "pack: column_failed"
    assert "word_len: KeyError" in by_key["bad"]["error"]
    assert list_tar_keys((tmp_path / "shards" / "vidal-00000.tar").read_bytes()) == ["good"]
    assert (stats["kept"], stats["failed"]) == (1, 1)
    meta = json.loads((tmp_path / "shards" / "vidal-00000.stats.json").read_text())
    assert meta["errors"] == {"pack: column_failed": 1}


def test_tar_bytes_are_webdataset_tarwriters():
    """The packer writes a tar exactly as webdataset's TarWriter would (the format every reader
    of these shards knows), without importing webdataset in the packing worker."""
    import webdataset as wds

    samples = [
        {"__key__": "b0c1", "mp4": b"\x00" * 700, "json": b'{"k": 1}', "txt": "ü".encode()},
        {"__key__": "a9f2", "flac": b"fLaC" * 300, "depth.png": b"\x89PNG", "json": b"{}"},
        {"__key__": "c000", "txt": b""},
        {"__key__": "k" * 128, "depth.png": b"\x89PNG" * 9},  # the longest key io/keys allows
    ]
    ours = io.BytesIO()
    with open_tar(ours) as tar:
        for members in samples:
            write_members(tar, members)
    theirs = io.BytesIO()
    writer = wds.TarWriter(theirs, mtime=TAR_MTIME, user="vidal", group="vidal")
    for members in samples:
        writer.write(members)
    writer.close()
    assert ours.getvalue() == theirs.getvalue()


def test_packing_a_shard_does_not_import_torch(tmp_path):
    """Every Ray worker that packs a shard pays for what packing imports: torch (through
    webdataset) cost 4.4 s of CPU per worker."""
    store = Store(str(tmp_path))
    sample = Sample("k1", 0, "/nowhere.mp4")
    store.write_table("rows.parquet", pa.table({"record": [sample.to_json()]}))
    code = (
        "import sys; from vidal.io.shards import pack_shard; "
        f"pack_shard({str(tmp_path)!r}, 0, 'rows.parquet', 'raw', 'fp'); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert (tmp_path / "shards" / "vidal-00000.stats.json").exists()
