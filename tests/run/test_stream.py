"""A step's two ways of writing a (stage, shard): rows kept as they pass when the block holds
the whole shard, part files compacted at the end when it holds a piece (a block Ray split).
Both must leave the same rows file and marker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest

from vidal.run import rows as rows_io
from vidal.run.stream import Plan, ShardTracker, StageStep, read_shard
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext


@dataclass
class TagStage(Stage):
    """Adds a field, fails every fifth sample and drops every seventh."""

    name: ClassVar[str] = "tag"
    batch_size: int = 3

    def process(self, sample: Sample) -> None:
        number = int(sample.key.rsplit("-", 1)[1])
        if number % 5 == 0:
            raise ValueError(f"sample {number} is bad")
        if number % 7 == 0:
            sample.drop(self.name, "seven")
        sample.meta["tag"] = number * 2


def _plan(out, count: int) -> tuple[Plan, StageContext]:
    first, second = TagStage(), TagStage()
    second.name = "tag2"
    records = {}
    for i in range(count):
        sample = Sample(key=f"k-{i:03d}", shard=0, source=f"/nowhere/{i}.mp4")
        records[sample.key] = sample.to_json()
    store = rows_io.Store(str(out))
    rows_io.write_rows(store, rows_io.SOURCE, 0, records, {}, account=False)
    plan = Plan([first, second], {0: 0}, {0: ["fp-a", "fp-b"]})
    return plan, StageContext(out=str(out))


def _written(out) -> dict:
    store = rows_io.Store(str(out))
    found = {}
    for stage in ("tag", "tag2"):
        marker = rows_io.read_marker(store, stage, 0)
        assert marker is not None, f"{stage} has no marker"
        marker.pop("finished")
        table = pq.read_table(out / "work" / stage / "00000.parquet")
        found[stage] = (marker, table.to_pylist(), table.schema.metadata)
    assert not list(out.glob("work/*/*.parts")), "parts left behind"
    return found


def _run(out, pieces: int) -> dict:
    plan, ctx = _plan(out, 23)
    tracker = ShardTracker([s.name for s in plan.stages])
    step = StageStep(plan, range(2), ctx, tracker)
    block = read_shard({"shard": 0, "start": 0}, str(out), plan, tracker)
    for rows in np.array_split(np.arange(23), pieces):
        step({name: column[rows] for name, column in block.items()})
    return _written(out)


@pytest.mark.parametrize("pieces", [2, 5])
def test_a_split_shard_leaves_the_rows_and_marker_of_a_whole_one(tmp_path, pieces):
    whole = _run(tmp_path / "whole", 1)
    split = _run(tmp_path / "split", pieces)
    assert split == whole
    marker, rows, _ = whole["tag"]
    assert marker["samples"] == 23
    assert marker["audit"]["failed"] == {"tag: exception": 5}  # 0, 5, 10, 15, 20
    assert marker["audit"]["dropped"] == {"seven": 3}  # 7, 14, 21
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)


def test_a_whole_shard_writes_no_part_files(tmp_path, monkeypatch):
    def no_parts(*args, **kwargs):
        raise AssertionError("a whole shard wrote a part file")

    monkeypatch.setattr(rows_io, "write_part", no_parts)
    found = _run(tmp_path, 1)
    assert found["tag2"][0]["digest"] == rows_io.digest(
        {r["key"]: r["record"] for r in found["tag2"][1]}
    )


def test_rows_kept_out_of_key_order_are_not_committed(tmp_path):
    store = rows_io.Store(str(tmp_path))
    writer = rows_io.RowsWriter("tag", 0, "cfg")
    late, early = Sample(key="b", shard=0, source=""), Sample(key="a", shard=0, source="")
    writer.add([late], [late.to_json()], [""])
    writer.add([early], [early.to_json()], [""])
    assert writer.commit(store, 2, {"config": "cfg"}) is None
    assert not (tmp_path / "work").exists()
