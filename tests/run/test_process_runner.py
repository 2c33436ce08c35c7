"""The processes runner (`runner.kind=processes`): the local runner's results from a pool of
worker processes, each stage set up once per worker, environmental failures and lost workers
leaving their shards for a rerun."""

from __future__ import annotations

import collections
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tests.run.test_ray_runner import shard_table
from vidal.io.sources import list_source
from vidal.io.store import Store
from vidal.media.ffmpeg import ffmpeg_exe
from vidal.run import rows as rows_io
from vidal.run.build import Builder, BuildIncomplete
from vidal.run.jobs import build
from vidal.run.process_runner import ProcessRunner
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

CORE = "stages=[probe,keyframes,audio,clip]"


@dataclass
class SetupPidStage(Stage):
    """Records which process set it up (a line in `record_to`) and which ran each sample."""

    name: ClassVar[str] = "setup_pid"
    record_to: str = ""
    batch_size: int = 2

    def setup(self, ctx: StageContext) -> None:
        super().setup(ctx)
        with open(self.record_to, "a") as f:
            f.write(f"{os.getpid()}\n")

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        for sample in batch:
            sample.fields[self.name] = {"pid": os.getpid()}
        return batch


@dataclass
class KillOnceStage(Stage):
    """Kills the worker running it, once (`flag` says it happened): a worker lost mid-shard,
    as to the out-of-memory killer."""

    name: ClassVar[str] = "kill_once"
    flag: str = ""

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        if not os.path.exists(self.flag):
            Path(self.flag).write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


def _rows(out: Path, stage: str, shards: int) -> dict[str, dict]:
    store = Store(str(out))
    found: dict[str, dict] = {}
    for shard in range(shards):
        for key, record in rows_io.read_rows(store, stage, shard).items():
            assert key not in found, f"{key} has rows in two shards"
            found[key] = json.loads(record)
    return found


def test_processes_build_equals_the_local_build(good_source, local_config, tmp_path):
    outcomes = {}
    for kind in ("local", "processes"):
        config = local_config("shards=3", CORE, f"runner.kind={kind}", "runner.num_cpus=2")
        outcomes[kind] = build(config, str(good_source), str(tmp_path / kind), quiet=True)
        assert outcomes[kind].failure is None, outcomes[kind].failure
    local, processes = tmp_path / "local", tmp_path / "processes"
    assert shard_table(processes) == shard_table(local)
    for tar in sorted(local.glob("shards/*.tar")):
        assert (processes / "shards" / tar.name).read_bytes() == tar.read_bytes(), tar.name
    assert outcomes["processes"].total == outcomes["local"].total
    inputs = {s.key for s in list_source(str(good_source))}
    assert {k for rows in shard_table(processes).values() for k in rows} == inputs


def test_stages_run_in_the_workers_and_set_up_once_per_worker(good_source, local_config, tmp_path):
    config = local_config("shards=4", "stages=[probe]", "runner.num_cpus=2")
    record = tmp_path / "setups.txt"
    record.touch()
    runner = ProcessRunner(config.runner)
    out = tmp_path / "out"
    try:
        builder = Builder(config, str(good_source), str(out), runner)
        builder.stages = [*config.pipeline(), SetupPidStage(record_to=str(record))]
        builder.run_stages()
    finally:
        runner.shutdown()
    setups = collections.Counter(record.read_text().split())
    ran = {row["fields"]["setup_pid"]["pid"] for row in _rows(out, "setup_pid", 4).values()}
    assert str(os.getpid()) not in setups  # nothing ran in the build's own process
    assert set(setups.values()) == {1}  # set up once in each worker, whatever the shards
    assert 1 <= len(setups) <= 2  # runner.num_cpus workers at most
    assert {str(pid) for pid in ran} <= set(setups)


def test_a_lost_worker_stops_the_pass_and_a_rerun_finishes_it(good_source, local_config, tmp_path):
    config = local_config("shards=2", "stages=[probe]", "runner.num_cpus=2")
    flag, out = tmp_path / "killed", tmp_path / "out"
    runner = ProcessRunner(config.runner)  # one runner for both runs: the pool is replaced
    try:
        builder = Builder(config, str(good_source), str(out), runner)
        builder.stages = [*config.pipeline(), KillOnceStage(flag=str(flag))]
        with pytest.raises(BuildIncomplete, match="BrokenProcessPool.*rerun the same command"):
            builder.run_stages()
        assert flag.exists()
        again = Builder(config, str(good_source), str(out), runner)
        again.stages = builder.stages
        again.run_stages()
    finally:
        runner.shutdown()
    inputs = {s.key for s in list_source(str(good_source))}
    assert set(_rows(out, "kill_once", 2)) == inputs  # every sample once, none lost


def test_missing_ffmpeg_in_the_workers_is_not_a_result(
    good_source, local_config, tmp_path, monkeypatch
):
    """The workers inherit the build's environment: ffmpeg gone fails the build naming the
    cause, stores no sample as failed, and the same command redoes the work once it is back."""
    config = local_config("stages=[probe,keyframes,clip]", "runner.kind=processes")
    out = tmp_path / "out"
    ffmpeg_exe.cache_clear()
    monkeypatch.setenv("VIDAL_FFMPEG", "/nonexistent/ffmpeg")
    outcome = build(config, str(good_source), str(out), quiet=True)
    assert outcome.exit_code != 0
    assert "ffmpeg_missing" in outcome.failure and "rerun the same command" in outcome.failure
    assert shard_table(out) in ({}, {s: {} for s in shard_table(out)})  # no sample kept as done
    monkeypatch.delenv("VIDAL_FFMPEG")
    ffmpeg_exe.cache_clear()
    again = build(config, str(good_source), str(out), quiet=True)
    assert again.failure is None
    assert again.total["kept"] == len(list(list_source(str(good_source))))


def test_map_samples_runs_a_stage_across_the_workers_in_order(local_config, tmp_path):
    config = local_config("runner.num_cpus=2")
    record = tmp_path / "setups.txt"
    samples = [Sample(key=f"k{i:03d}", shard=0, source=f"s{i}") for i in range(40)]
    runner = ProcessRunner(config.runner)
    try:
        ctx = StageContext(out=str(tmp_path))
        done = runner.map_samples(SetupPidStage(record_to=str(record)), ctx, samples)
    finally:
        runner.shutdown()
    assert [s.key for s in done] == [s.key for s in samples]
    pids = {s.fields["setup_pid"]["pid"] for s in done}
    assert os.getpid() not in pids and pids <= {int(p) for p in record.read_text().split()}
