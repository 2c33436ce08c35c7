"""Tar members are untrusted: a shard whose members are named `../../x.mp4`, `/abs/x.mp4` or
`-rf.mp4` (and parquet rows with those keys) is read by the report and the trainer without
a path outside the destination, an option-like name, or a crash: the bad keys are skipped."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.train.conftest import depth_data, depth_sample
from vidal.report.html import write_report
from vidal.run.jobs import build
from vidal.train.data import make_dataset

HOSTILE_KEYS = ["../../x", "/abs/x", "-rf"]


def _add_members(tar_path: Path, members: dict[str, bytes]) -> None:
    """Rewrite `tar_path` with `members` appended (names taken as they are)."""
    with tarfile.open(tar_path) as tar:
        old = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    with tarfile.open(tar_path, "w") as tar:
        for info, data in old:
            tar.addfile(info, io.BytesIO(data))
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture(scope="module")
def hostile_dataset(clip_bank, tmp_path_factory) -> Path:
    """A real one-shard build, then hostile members and rows added to its tar and parquet."""
    from vidal.config import load_config

    root = tmp_path_factory.mktemp("tar_keys")
    src = root / "src"
    src.mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", src / "good.mp4")
    out = root / "data" / "out"
    overrides = ["runner.kind=local", "runner.progress=false", "shards=1"]
    config = load_config("demo", [*overrides, "stages=[probe,keyframes,clip]"])
    assert build(config, str(src), str(out), quiet=True).failure is None
    tar_path, parquet = out / "shards" / "vidal-00000.tar", out / "shards" / "vidal-00000.parquet"
    with tarfile.open(tar_path) as tar:
        good = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    _add_members(
        tar_path, {f"{key}.{ext}": data for key in HOSTILE_KEYS for ext, data in good.items()}
    )
    table = pq.read_table(parquet)
    copies = [
        table.set_column(0, "key", pa.array([k], table.schema.field(0).type)) for k in HOSTILE_KEYS
    ]
    assert table.schema.names[0] == "key"
    pq.write_table(pa.concat_tables([table, *copies]), parquet)
    return out


def test_report_skips_hostile_keys(hostile_dataset):
    root = hostile_dataset.parents[1]
    before = _snapshot(root)
    page_path = write_report(str(hostile_dataset), samples=16)
    created = _snapshot(root) - before
    assert all(hostile_dataset in p.parents for p in created), created
    page = Path(page_path).read_text("utf-8")
    assert "data-key='good-" in page  # the good sample is shown
    for key in HOSTILE_KEYS:
        assert f"data-key='{key}'" not in page
    assert not Path("/abs/x.mp4").exists()


def _trainer_tar(path: Path) -> None:
    samples = [depth_sample("good", "a good caption")] + [
        depth_sample(key, "hostile") for key in HOSTILE_KEYS
    ]
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext != "__key__":
                    info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_trainer_skips_hostile_keys(tmp_path):
    tar_path = tmp_path / "shard.tar"
    _trainer_tar(tar_path)
    with tarfile.open(tar_path) as tar:  # the hostile names really are in the shard
        names = tar.getnames()
    assert {"../../x.json", "/abs/x.json", "-rf.json"} <= set(names)
    dataset, _ = make_dataset(str(tar_path), depth_data(), train=False)
    keys = [sample["key"] for sample in dataset]
    assert keys == ["good"]
    assert json.dumps(keys)  # and the run went on past them
