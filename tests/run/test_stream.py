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

    out_of_memory_at: int = -1  # the sample on which the machine "runs out of memory"

    def process(self, sample: Sample) -> None:
        number = int(sample.key.rsplit("-", 1)[1])
        if number == self.out_of_memory_at:
            raise MemoryError("the worker ran out of memory")
        if number % 5 == 0:
            raise ValueError(f"sample {number} is bad")
        if number % 7 == 0:
            sample.drop(self.name, "seven")
        sample.meta["tag"] = number * 2


def _plan(out, count: int, out_of_memory_at: int = -1) -> tuple[Plan, StageContext]:
    first, second = TagStage(out_of_memory_at=out_of_memory_at), TagStage()
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


def _steps(out, pieces: int, spans: list[range], out_of_memory_at: int = -1) -> ShardTracker:
    """The shard through steps `spans`, handed to each in `pieces` blocks."""
    plan, ctx = _plan(out, 23, out_of_memory_at)
    tracker = ShardTracker([s.name for s in plan.stages])
    blocks = [read_shard({"shard": 0, "start": 0}, str(out), plan, tracker)]
    if pieces > 1:
        split = np.array_split(np.arange(23), pieces)
        blocks = [{name: column[rows] for name, column in blocks[0].items()} for rows in split]
    for span in spans:
        blocks = [StageStep(plan, span, ctx, tracker)(block) for block in blocks]
    return tracker


def _run(out, pieces: int) -> dict:
    _steps(out, pieces, [range(2)])
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


@pytest.mark.parametrize("pieces", [1, 3])
@pytest.mark.parametrize("spans", [[range(2)], [range(1), range(1, 2)]], ids=["fused", "apart"])
def test_an_environmental_failure_leaves_its_stage_and_the_later_ones_unfinished(
    tmp_path, pieces, spans
):
    """Out of memory on one sample is the machine's fault: no rows, no marker for that stage
    or the next (whether in the same step or a later one, a whole shard or pieces), and the
    tracker names the cause for the driver's message."""
    tracker = _steps(tmp_path, pieces, spans, out_of_memory_at=8)
    for stage in ("tag", "tag2"):
        assert not (tmp_path / "work" / stage / "00000.done.json").exists(), stage
        assert not (tmp_path / "work" / stage / "00000.parquet").exists(), stage
    failure = tracker.failure()
    assert failure["poisoned"] == {0: 0}
    assert failure["causes"] == {"tag: out_of_memory": 1}
