"""`dedup` as a stage inside `vidal build`: the driver decides once, between the streaming pass
of the stages before it (every shard) and the pass of the stages from it on."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq

from tests.models import model_config, rows
from tests.stages.test_dedup import named
from vidal.run.jobs import build, run_stage

PIPELINE = [
    "stages=[probe,keyframes,vl_filter,dedup,depth]",
    "vl_filter.batch_size=3",
    "dedup.threshold=0.99995",  # tiny random CLIP: distinct clips within 0.9998, copies at 1
]


def finished(out) -> dict[str, float]:
    return {
        str(p.relative_to(out)): json.loads(p.read_text()).get("finished")
        for p in out.glob("work/*/*.done.json")
    }


def test_dedup_inside_build_once_per_build_and_resumable(clip_bank, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(clip_bank, source)
    shutil.copy(source / "synth-000.mp4", source / "copy-000.mp4")
    shutil.copy(source / "synth-000.json", source / "copy-000.json")
    out = tmp_path / "out"
    assert build(model_config(*PIPELINE), str(source), str(out), quiet=True).failure is None

    dedup = named(rows(out, "dedup", *PIPELINE))
    kept = dedup["copy-000"]  # same video and title: equal scores, the smaller key is kept
    assert kept.ok and dedup["synth-000"].dropped == f"duplicate_of:{kept.key}"
    depth = named(rows(out, "depth", *PIPELINE))
    assert depth["synth-000"].dropped_by == "dedup" and "depth" not in depth["synth-000"].fields
    assert "depth" in depth["copy-000"].fields
    packed = {
        row["key"].rsplit("-", 1)[0]: row
        for path in (out / "shards").glob("vidal-*.parquet")
        for row in pq.read_table(path).to_pylist()
    }
    assert len(packed) == 7 and packed["synth-000"]["status"] == "dropped"

    before = finished(out)
    assert build(model_config(*PIPELINE), str(source), str(out), quiet=True).failure is None
    assert finished(out) == before  # nothing recomputed

    stricter = [*PIPELINE[:-1], "dedup.threshold=0.99999999"]
    run_stage(model_config(*stricter), "dedup", str(source), str(out), quiet=True)
    after = finished(out)
    changed = {path for path in before if before[path] != after.get(path)}
    assert changed and all(path.startswith("work/dedup/") for path in changed)
