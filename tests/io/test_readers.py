"""The shards read with no vidal code: plain webdataset, Hugging Face `datasets`' webdataset
loader, and `ray.data.read_webdataset`; each gives back exactly the kept samples, decodable."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import webdataset

from vidal.config import load_config
from vidal.media.synth import make_text_as_mp4
from vidal.run.jobs import build

SHORT_SIDE = 96  # below the bank's 120 px, so the test sees the setting applied


@pytest.fixture(scope="module")
def dataset(clip_bank, tmp_path_factory) -> dict:
    """A built dataset over the clip bank (3 clips with audio, 3 without) plus a bad file."""
    root = tmp_path_factory.mktemp("readers")
    source = root / "source"
    source.mkdir()
    for path in clip_bank.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    make_text_as_mp4(source / "broken.mp4")
    out = root / "out"
    config = load_config(
        "demo",
        [
            "runner.kind=local",
            "runner.progress=false",
            "shards=2",
            f"clip.short_side={SHORT_SIDE}",
            "stages=[probe,keyframes,audio,clip]",
        ],
    )
    outcome = build(config, str(source), str(out), quiet=True)
    assert outcome.failure is None
    urls = sorted(str(p) for p in (out / "shards").glob("vidal-*.tar"))
    rows = [
        r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).to_pylist()
    ]
    kept = {r["key"]: r for r in rows if r["status"] == "ok"}
    assert len(kept) == 6 and len(rows) == 7
    assert sum(bool(r["has_audio"]) for r in kept.values()) == 3
    return {"out": out, "urls": urls, "kept": kept, "root": root}


def check_mp4(data: bytes, meta: dict) -> None:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = [f for f in container.decode(video=0)]
    assert min(width, height) == SHORT_SIDE
    assert (width, height) == (meta["clip"]["width"], meta["clip"]["height"])
    src = meta["source_video"]
    assert abs(width / height - src["width"] / src["height"]) < 0.05  # aspect kept
    assert len(frames) > 0


def check_flac(data: bytes | None, meta: dict) -> None:
    if not meta["source_video"]["has_audio"]:
        assert data is None
        assert meta["audio"]["present"] is False
        return
    assert isinstance(data, bytes)
    samples, rate = soundfile.read(io.BytesIO(data))
    assert rate == 16000
    assert samples.ndim == 1  # mono
    assert abs(len(samples) / rate - meta["source_video"]["duration"]) < 0.2
    assert np.abs(samples).max() > 0.01  # the sine tone, not silence
    assert meta["audio"]["present"] is True and meta["audio"]["sample_rate"] == 16000


def check_meta(meta: dict, key: str, txt: str, parquet_row: dict) -> None:
    assert meta["key"] == key
    frames = meta["frames"]
    assert len(frames["indices"]) == 8 and frames["count"] == 8
    assert frames["indices"] == sorted(frames["indices"])
    assert frames["indices"][0] >= 0 and frames["indices"][-1] < meta["source_video"]["num_frames"]
    assert len(frames["timestamps"]) == 8
    assert meta["title"] and meta["title"] == parquet_row["title"]
    assert meta["hashtags"] and all(t.startswith("#") for t in meta["hashtags"])
    assert txt == meta["text"]["raw"] == parquet_row["caption"]
    assert meta["errors"] == {}
    assert meta["frames"]["indices"] == parquet_row["frame_indices"]


def test_plain_webdataset(dataset):
    seen = {}
    pipeline = webdataset.WebDataset(dataset["urls"], shardshuffle=False).decode()
    for sample in pipeline:
        key = sample["__key__"]
        assert key not in seen
        seen[key] = sample
        assert set(sample) - {"__key__", "__url__", "__local_path__"} <= {
            "mp4",
            "flac",
            "json",
            "txt",
            "depth.png",
            "ir.png",
        }
        meta = sample["json"]
        assert isinstance(meta, dict) and isinstance(sample["txt"], str)
        check_meta(meta, key, sample["txt"], dataset["kept"][key])
        check_mp4(sample["mp4"], meta)
        check_flac(sample.get("flac"), meta)
    assert set(seen) == set(dataset["kept"])


def test_huggingface_datasets(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    # mp4/flac as bytes: HF's own Video/Audio features need torchcodec, which is not installed
    features = datasets.Features(
        {
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
            "mp4": datasets.Value("binary"),
            "flac": datasets.Value("binary"),
            "json": datasets.Json(),
            "txt": datasets.Value("string"),
        }
    )
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"train": dataset["urls"]},
        split="train",
        cache_dir=str(tmp_path / "cache"),
        features=features,
    )
    assert len(ds) == len(dataset["kept"])
    keys = [row["__key__"] for row in ds]
    assert sorted(keys) == sorted(dataset["kept"]) and len(set(keys)) == len(keys)
    for row in ds:
        key = row["__key__"]
        check_meta(row["json"], key, row["txt"], dataset["kept"][key])
        check_mp4(row["mp4"], row["json"])
        check_flac(row["flac"], row["json"])


def test_ray_read_webdataset(dataset, ray_cluster):
    ray = ray_cluster
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = ray.data.read_webdataset(dataset["urls"]).take_all()
    keys = [r["__key__"] for r in rows]
    assert sorted(keys) == sorted(dataset["kept"]) and len(set(keys)) == len(keys)
    for row in rows:
        key = row["__key__"]
        meta = row["json"]
        txt = row["txt"]
        assert isinstance(meta, dict)
        check_meta(meta, key, txt, dataset["kept"][key])
        check_mp4(row["mp4"], meta)
        flac = row.get("flac")
        check_flac(flac if isinstance(flac, bytes) else None, meta)  # absent: None or NaN


def test_shard_urls_in_brace_notation(dataset):
    """The documented training URL form, vidal-{00000..0000N}.tar, lists every shard."""
    out = dataset["out"]
    last = len(dataset["urls"]) - 1
    url = os.path.join(str(out), "shards", f"vidal-{{00000..{last:05d}}}.tar")
    keys = [s["__key__"] for s in webdataset.WebDataset(url, shardshuffle=False)]
    assert sorted(keys) == sorted(dataset["kept"])
