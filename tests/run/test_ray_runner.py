"""The Ray runner: same results as the local runner, Ray Data operators named after the
stages, model stages as actor pools whose setup runs once per actor."""

from __future__ import annotations

import collections
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidal.config import load_config
from vidal.io.shards import pack_shard
from vidal.io.sources import list_source
from vidal.io.store import Store
from vidal.run import rows as rows_io
from vidal.run.jobs import build
from vidal.run.ray_runner import RayRunner
from vidal.run.stream import Plan
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

# the media stages: the runner is the point here (the model path is tested with PidStage)
STAGE_NAMES = ["probe", "keyframes", "audio", "clip"]

# -- helpers ------------------------------------------------------------------------------


def shard_table(out: Path) -> dict[int, dict[str, str]]:
    """shard -> {key: status} from the shard parquets."""
    return {
        int(p.name[6:11]): {r["key"]: r["status"] for r in pq.read_table(p).to_pylist()}
        for p in sorted((out / "shards").glob("vidal-*.parquet"))
    }


def tar_member_names(out: Path) -> dict[int, list[str]]:
    import tarfile

    names = {}
    for p in sorted((out / "shards").glob("vidal-*.tar")):
        with tarfile.open(p) as tar:
            names[int(p.name[6:11])] = sorted(m.name for m in tar.getmembers())
    return names


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass
class PidStage(Stage):
    """A CPU stage that records which process set it up and which ran each batch."""

    name: ClassVar[str] = "pid_cpu"
    record_to: str = ""
    batch_size: int = 2
    num_cpus: float = 0.25

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        _append(self.record_to, f"{self.name} {os.getpid()}")

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        tag = uuid.uuid4().hex[:8]
        for sample in batch:
            sample.fields[self.name] = {"pid": os.getpid(), "batch": tag}
        return batch


@dataclass
class ModelPidStage(PidStage):
    """A model-like stage: runs as an actor pool; setup is where the model would load."""

    name: ClassVar[str] = "pid_model"
    uses_model: ClassVar[bool] = True
    concurrency: int | None = 2


def _stream(runner, stages, ctx, rows: list[dict]) -> list[dict]:
    """Plan `rows` as a source in the store, run one pass, return the last stage's rows."""
    store = Store(ctx.out)
    shards = sorted({r["shard"] for r in rows})
    for shard in shards:
        records = {r["key"]: r["record"] for r in rows if r["shard"] == shard}
        rows_io.write_rows(store, rows_io.SOURCE, shard, records, {"stage": rows_io.SOURCE})
    fps = {s: [f"fp{s}-{i}" for i in range(len(stages))] for s in shards}
    plan = Plan(stages, {s: 0 for s in shards}, fps)
    failure = runner.stream(plan, ctx, [{"shard": s, "start": 0} for s in shards])
    assert not failure["poisoned"], failure
    return [
        {"key": k, "shard": s, "record": r}
        for s in shards
        for k, r in rows_io.read_rows(store, stages[-1].name, s).items()
    ]


def _rows(n: int) -> list[dict]:
    return [
        {"key": f"k{i:03d}", "shard": i % 3, "record": Sample(f"k{i:03d}", i % 3, "x").to_json()}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def ray_and_local_builds(clip_bank, tmp_path_factory, ray_cluster):
    """The same source built by the local runner and by the Ray runner; the Ray Data datasets
    the Ray runner made are captured to inspect their operators."""
    root = tmp_path_factory.mktemp("ray_build")
    source = root / "source"
    shutil.copytree(clip_bank, source)
    (source / "broken.mp4").write_bytes(b"not a video at all")
    captured = []
    original = RayRunner._map

    def capture(self, ds, step):
        ds = original(self, ds, step)
        captured.append(ds)
        return ds

    executed = []
    original_stream = RayRunner.stream

    def capture_stream(self, *args, **kwargs):
        result = original_stream(self, *args, **kwargs)
        executed.append(self.last_dataset)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(RayRunner, "_map", capture)
    mp.setattr(RayRunner, "stream", capture_stream)
    overrides = ["runner.progress=false", "shards=3", f"stages=[{','.join(STAGE_NAMES)}]"]
    ray_out, ray_result = root / "ray", None
    try:
        config = load_config("demo", ["runner.kind=ray", *overrides])
        ray_result = build(config, str(source), str(ray_out), quiet=True)
    except Exception as exc:  # kept for the tests that need the build; the others go on
        ray_result = exc
    finally:
        mp.undo()
    local_out = root / "local"
    config = load_config("demo", ["runner.kind=local", *overrides])
    local_outcome = build(config, str(source), str(local_out), quiet=True)
    return {
        "source": source,
        "ray": (ray_out, ray_result),
        "local": (local_out, local_outcome),
        "datasets": captured,
        "executed": executed,
    }


def _ray_outcome(builds):
    out, result = builds["ray"]
    if isinstance(result, BaseException):
        raise AssertionError(f"the Ray build failed: {type(result).__name__}: {result}")
    return out, result


# -- tests --------------------------------------------------------------------------------


def test_ray_build_matches_local_build(ray_and_local_builds):
    ray_out, ray_outcome = _ray_outcome(ray_and_local_builds)
    local_out, local_outcome = ray_and_local_builds["local"]
    assert ray_outcome.failure is None and local_outcome.failure is None
    inputs = {s.key for s in list_source(str(ray_and_local_builds["source"]))}
    ray_table, local_table = shard_table(ray_out), shard_table(local_out)
    assert ray_table == local_table
    assert {k for rows in ray_table.values() for k in rows} == inputs
    statuses = collections.Counter(s for rows in ray_table.values() for s in rows.values())
    assert statuses == {"ok": len(inputs) - 1, "failed": 1}
    assert tar_member_names(ray_out) == tar_member_names(local_out)
    totals = {k: v for k, v in ray_outcome.total.items() if k != "tar_bytes"}
    assert totals == {k: v for k, v in local_outcome.total.items() if k != "tar_bytes"}


def test_ray_build_shard_files_complete(ray_and_local_builds):
    """Shards packed in parallel Ray tasks: every shard has its tar, parquet and stats and no
    temp file is left beside them."""
    ray_out, _ = _ray_outcome(ray_and_local_builds)
    names = sorted(p.name for p in (ray_out / "shards").iterdir())
    assert names == sorted(
        f"vidal-{i:05d}.{ext}" for i in range(3) for ext in ("tar", "parquet", "stats.json")
    )


def test_ray_data_operators_are_named_after_the_stages(ray_and_local_builds):
    datasets = ray_and_local_builds["datasets"]
    assert datasets, "the Ray runner made no dataset"
    ds = datasets[-1]
    chain = []
    op = ds._logical_plan.dag
    while op is not None:
        chain.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    chain.reverse()
    # one execution: the shards' read tasks, every stage, and a row count for the driver;
    # CPU stages with the same resources share an operator ("probe+keyframes+...")
    assert chain[0] == "Readshards", chain  # the datasource's read tasks: a shard each
    steps = [name.removeprefix("MapBatches(").removesuffix(")") for name in chain[1:]]
    assert "+".join(steps).split("+") == STAGE_NAMES, chain
    assert len(steps) < len(STAGE_NAMES), "the CPU stages were not fused into one step"
    (executed,) = ray_and_local_builds["executed"]  # one execution for the whole build
    stats = executed.stats()
    for step in steps:
        assert f"MapBatches({step})" in stats
    # a pass without model stages reads each shard in the task that processes it: no worker
    # processes that only read, no block through the object store between read and step
    assert f"Readshards->MapBatches({steps[0]})" in stats, stats


def test_model_stage_runs_as_actor_pool_set_up_once_per_actor(ray_cluster, tmp_path):
    record = str(tmp_path / "setups.log")
    cpu = PidStage(record_to=record)
    model = ModelPidStage(record_to=record)
    captured = []
    runner = RayRunner(load_config("demo", ["runner.progress=false"]).runner)
    original = runner._map

    def capture(ds, step):
        ds = original(ds, step)
        captured.append(ds)
        return ds

    runner._map = capture
    rows, ctx = _rows(24), StageContext(out=str(tmp_path / "out"))
    out = _stream(runner, [cpu, model], ctx, rows)
    assert sorted(r["key"] for r in out) == sorted(r["key"] for r in rows)

    setups = collections.Counter()
    for line in Path(record).read_text().splitlines():
        name, pid = line.split()
        setups[(name, int(pid))] += 1
    batches = collections.defaultdict(set)  # (stage, pid) -> batch tags
    for row in out:
        sample = Sample.from_json(row["record"])
        for name in ("pid_cpu", "pid_model"):
            batches[(name, sample.fields[name]["pid"])].add(sample.fields[name]["batch"])

    model_setups = {pid: n for (name, pid), n in setups.items() if name == "pid_model"}
    model_batches = {pid: tags for (name, pid), tags in batches.items() if name == "pid_model"}
    n_batches = sum(len(t) for t in model_batches.values())
    assert n_batches >= len(rows) // model.batch_size
    assert all(n == 1 for n in model_setups.values()), model_setups  # once per actor
    assert 1 <= len(model_setups) <= model.concurrency  # at most `concurrency` actors
    assert set(model_batches) <= set(model_setups)  # every batch ran in a set-up actor
    assert len(model_setups) < n_batches  # not once per batch
    assert os.getpid() not in model_setups  # in actors, not in the driver

    # the CPU stage ran as tasks; it too sets up once per worker process, not per batch
    cpu_setups = {pid: n for (name, pid), n in setups.items() if name == "pid_cpu"}
    cpu_batches = {pid for (name, pid) in batches if name == "pid_cpu"}
    assert all(n == 1 for n in cpu_setups.values()), cpu_setups
    assert cpu_batches <= set(cpu_setups)

    # the operator of the model stage is an actor pool, named after the stage
    op = captured[-1]._logical_plan.dag
    assert op.name == "MapBatches(pid_model)"
    assert type(op.compute).__name__ == "ActorPoolStrategy"
    prev = op.input_dependencies[0]
    assert prev.name == "MapBatches(pid_cpu)"
    assert type(prev.compute).__name__ == "TaskPoolStrategy"


@pytest.mark.timeout(300)
def test_pass_finishes_when_model_actors_hold_every_cpu(ray_cluster, tmp_path):
    """On a cluster without GPUs the model actors can hold every CPU (here two actors of one
    CPU each on the session's 2-CPU Ray): the shards must still be read (a read task that
    waited for a CPU hung the image's demo), and every sample pass every stage."""
    runner = RayRunner(load_config("demo", ["runner.progress=false"]).runner)
    first = ModelPidStage(record_to=str(tmp_path / "setups.log"), num_cpus=1.0, concurrency=1)
    second = ModelPidStage(record_to=first.record_to, num_cpus=1.0, concurrency=1)
    second.name = "pid_model_2"  # an instance name: its own rows and markers
    rows, ctx = _rows(12), StageContext(out=str(tmp_path / "out"))
    out = _stream(runner, [first, second], ctx, rows)
    assert sorted(r["key"] for r in out) == sorted(r["key"] for r in rows)
    for row in out:
        assert {"pid_model", "pid_model_2"} <= set(Sample.from_json(row["record"]).fields)


def test_parallel_packs_do_not_delete_each_others_files(tmp_path):
    """The Ray runner packs shards in parallel tasks that share shards/: packing one shard
    must not remove a file that another shard's pack is writing at that moment."""
    store = Store(str(tmp_path))
    rows = "work/clip/00001.parquet"
    store.write_table(rows, pa.table({"key": pa.array([], pa.string()), "record": []}))
    with store.staging("shards/vidal-00000.tar") as tmp:
        Path(tmp).write_bytes(b"shard 0 being written by another task")
        pack_shard(str(tmp_path), 1, rows, "raw", "fingerprint")  # meanwhile, shard 1 is packed
        assert Path(tmp).exists(), "packing shard 1 deleted shard 0's file in progress"
    assert (tmp_path / "shards" / "vidal-00000.tar").read_bytes().startswith(b"shard 0")
    assert (tmp_path / "shards" / "vidal-00001.stats.json").exists()


def test_reads_fuse_into_the_first_step_only_where_that_is_safe():
    """A read asks for the first step's CPUs (so Ray Data fuses it into that step) only in a
    pass without model stages, whose actors may hold every CPU, and only when the step has
    no custom resources or concurrency, which keep Ray Data from fusing: else no CPU."""
    from types import SimpleNamespace

    from vidal.run.ray_runner import _read_cpus

    def step(*stages):
        return SimpleNamespace(stages=list(stages))

    assert _read_cpus([step(PidStage(num_cpus=0.25)), step(PidStage(num_cpus=1.0))]) == 0.25
    assert _read_cpus([step(PidStage()), step(ModelPidStage())]) == 0
    assert _read_cpus([step(ModelPidStage())]) == 0
    assert _read_cpus([step(PidStage(resources={"ssd": 1}))]) == 0
    assert _read_cpus([step(PidStage(concurrency=2))]) == 0
