"""Planning as a map/reduce pass in the runner's workers: the same source rows, digests and
duplicate decisions as listing the source on the driver, on the local and the Ray runner;
resume rewrites nothing when the source did not change."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from vidal.config import ConfigError
from vidal.io.sources import SourceError, SourceOptions, list_source, shard_of
from vidal.io.store import Store
from vidal.run import rows as rows_io
from vidal.run.build import Builder
from vidal.run.execute import LocalRunner
from vidal.run.plan import plan_source

SHARDS = 7
ROWS = 400


def _rows() -> list[dict]:
    """Rows with repeats across row groups and parts, failing rows, and cells holding the
    characters a line-based spill could split on."""
    rows = [{"path": f"clips/c{i:04d}.mp4", "title": f"t{i}", "note": None} for i in range(ROWS)]
    rows[7]["path"] = rows[250]["path"] = rows[399]["path"] = "clips/same.mp4"  # 3 parts
    rows[120]["path"] = rows[121]["path"] = "https://example.com/v.mp4"  # within a part
    rows[30]["path"] = "javascript:alert(1)"
    rows[31]["path"] = ""
    rows[301]["path"] = rows[302]["path"] = None  # no uri: never the same video
    rows[60]["title"] = "line\u2028separator\rreturn\nnewline\ttab"
    rows[61]["note"] = "line\u2028separator\rreturn\nnewline\ttab"  # extra: kept as it is
    return rows


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(_rows()), path, row_group_size=50)  # 8 row groups
    return path


def on_driver(source: str) -> dict[int, dict[str, str]]:
    """The plan as the driver made it before: list_source's samples grouped by shard."""
    shards: dict[int, dict[str, str]] = collections.defaultdict(dict)
    for sample in list_source(source):
        sample.shard = shard_of(sample.key, SHARDS)
        shards[sample.shard][sample.key] = sample.to_json()
    return shards


class Recorder:
    def __init__(self):
        self.done = collections.Counter()

    def add(self, label, total):
        return lambda n, failed=0: self.done.update({label: n})


def _plan(out, source, runner, progress=None) -> tuple[dict[int, str], int]:
    # 150 rows a part: 3 parts (rows 0-149, 150-299, 300-399); 3 shards a reduce task
    store, opts = Store(str(out)), SourceOptions()
    return plan_source(store, str(source), opts, SHARDS, runner, 150, 3, progress)


def _assert_same_plan(out, source, digests, total) -> None:
    expected = on_driver(str(source))
    store = Store(str(out))
    for shard in range(SHARDS):
        assert rows_io.read_rows(store, "source", shard) == expected[shard]
        assert digests[shard] == rows_io.digest(expected[shard])
        assert rows_io.read_marker(store, "source", shard)["digest"] == digests[shard]
    assert total == ROWS == sum(len(r) for r in expected.values())
    assert not (out / "work" / "plan").exists()  # the spills are gone


def test_planned_in_parts_as_on_the_driver(manifest, tmp_path):
    out, progress = tmp_path / "out", Recorder()
    digests, total = _plan(out, manifest, LocalRunner(), progress)
    _assert_same_plan(out, manifest, digests, total)
    assert progress.done == {"plan: list": 3, "plan: shards": 3}  # parts, groups of shards
    samples = {s.meta["row"]: s for s in list_source(str(manifest))}
    # the decisions this plan has to reproduce: a repeat across parts is dropped, the rest fail
    assert samples[250].dropped == samples[399].dropped == "duplicate: same video as row 7"
    assert samples[121].dropped == "duplicate: same video as row 120"
    assert samples[7].ok and samples[120].ok
    assert samples[301].errors["source"] == samples[302].errors["source"] != ""
    assert samples[30].errors["source"].startswith("bad_url")


def test_a_folder_plans_as_on_the_driver(good_source, tmp_path):
    out = tmp_path / "out"
    digests, total = _plan(out, good_source, LocalRunner())
    expected = on_driver(str(good_source))
    assert {s: rows_io.read_rows(Store(str(out)), "source", s) for s in expected} == expected
    assert total == len(list(good_source.glob("*.mp4")))
    assert all(digests[s] == rows_io.digest(expected.get(s, {})) for s in range(SHARDS))


def test_replanning_an_unchanged_source_rewrites_nothing(manifest, tmp_path):
    out = tmp_path / "out"
    _plan(out, manifest, LocalRunner())
    store = Store(str(out))
    before = {s: rows_io.read_marker(store, "source", s) for s in range(SHARDS)}
    killed = out / "work" / "plan" / ".00001.tmp-0123456789"  # a killed plan's half a spill
    killed.mkdir(parents=True)
    (killed / "00000.tsv").write_text("stale\t{}\n")
    _plan(out, manifest, LocalRunner())
    assert not (out / "work" / "plan").exists()
    assert {s: rows_io.read_marker(store, "source", s) for s in range(SHARDS)} == before
    rows = _rows()
    rows[5]["title"] = "changed"
    pq.write_table(pa.Table.from_pylist(rows), manifest, row_group_size=50)
    digests, _ = _plan(out, manifest, LocalRunner())
    (key,) = [s.key for s in list_source(str(manifest)) if s.meta["row"] == 5]
    changed = shard_of(key, SHARDS)
    after = {s: rows_io.read_marker(store, "source", s) for s in range(SHARDS)}
    assert [s for s in range(SHARDS) if after[s] != before[s]] == [changed]
    assert digests[changed] != before[changed]["digest"]


def test_ray_runner_plans_as_on_the_driver(ray_cluster, manifest, tmp_path):
    from vidal.config import load_config
    from vidal.run.ray_runner import RayRunner

    runner = RayRunner(load_config("demo", ["runner.progress=false"]).runner)
    csv = tmp_path / "m.csv"  # a manifest read as a stream: one part
    pyarrow.csv.write_csv(pa.Table.from_pylist(_rows()), csv)
    for source in (manifest, csv):
        out = tmp_path / f"out-{source.suffix[1:]}"
        digests, total = _plan(out, source, runner)
        _assert_same_plan(out, source, digests, total)
    # a manifest found unreadable in a worker: the user reads the reason, not a remote traceback
    csv.write_text("title\nno uri here\n")
    with pytest.raises(SourceError) as exc:
        _plan(tmp_path / "out-bad", csv, runner)
    assert str(exc.value).startswith(f"manifest {csv} needs a 'url' or 'path' column")


def test_a_changed_shard_count_is_refused_before_anything_is_written(
    manifest, tmp_path, local_config
):
    out = tmp_path / "out"
    Builder(local_config(f"shards={SHARDS}"), str(manifest), str(out), LocalRunner()).plan()
    store = Store(str(out))
    before = {s: rows_io.read_marker(store, "source", s) for s in range(SHARDS)}
    builder = Builder(local_config("shards=5"), str(manifest), str(out), LocalRunner())
    with pytest.raises(ConfigError, match=f"--shards {SHARDS} to continue"):
        builder.plan()
    assert {s: rows_io.read_marker(store, "source", s) for s in range(SHARDS)} == before
    assert sorted(p.name for p in (out / "work" / "source").glob("*.done.json")) == [
        f"{s:05d}.done.json" for s in range(SHARDS)
    ]
