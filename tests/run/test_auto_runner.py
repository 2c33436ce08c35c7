"""The default runner on one machine (`runner.kind=auto`): passes of CPU stages in the
processes runner's pool, passes with model stages on Ray, and the same results either way."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from tests.run.test_process_runner import ModelSetupPidStage, SetupPidStage, _rows
from tests.run.test_ray_runner import shard_table
from vidal.config import load_config
from vidal.run.auto_runner import AutoRunner
from vidal.run.build import Builder
from vidal.run.jobs import build
from vidal.run.ray_runner import make_runner


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _pids(record: Path) -> set[int]:
    return {int(line) for line in record.read_text().split()}


def test_cpu_passes_run_in_worker_processes_and_model_passes_on_ray(
    good_source, local_config, tmp_path, ray_cluster
):
    config = local_config("shards=2", "stages=[probe]", "runner.kind=auto", "runner.num_cpus=2")
    cpu_record, model_record = tmp_path / "cpu.txt", tmp_path / "model.txt"
    cpu_record.touch(), model_record.touch()
    runner = make_runner(config.runner)
    assert isinstance(runner, AutoRunner)
    try:
        builder = Builder(config, str(good_source), str(tmp_path / "cpu"), runner)
        builder.stages = [*config.pipeline(), SetupPidStage(record_to=str(cpu_record))]
        builder.run_stages()
        cpu_pids = _pids(cpu_record)
        assert {_parent(pid) for pid in cpu_pids} == {os.getpid()}  # this build's own pool
        builder = Builder(config, str(good_source), str(tmp_path / "model"), runner)
        builder.stages = [*config.pipeline(), ModelSetupPidStage(record_to=str(model_record))]
        builder.run_stages()
        (model_pid,) = _pids(model_record)  # one actor, its model loaded once
        assert model_pid not in cpu_pids and _parent(model_pid) != os.getpid()  # a Ray worker
        assert multiprocessing.active_children() == []  # the idle pool let go for Ray's pass
    finally:
        runner.shutdown()
    inputs = set(_rows(tmp_path / "cpu", "probe", 2))
    assert set(_rows(tmp_path / "cpu", "setup_pid", 2)) == inputs
    assert set(_rows(tmp_path / "model", "model_setup_pid", 2)) == inputs


def test_the_default_build_equals_the_local_build(good_source, local_config, tmp_path):
    stages = "stages=[probe,keyframes,audio,clip]"
    assert load_config("vidal10m").runner.kind == "auto"  # what a plain `vidal build` runs
    outcomes = {}
    for kind in ("local", "auto"):
        config = local_config("shards=3", stages, f"runner.kind={kind}", "runner.num_cpus=2")
        outcomes[kind] = build(config, str(good_source), str(tmp_path / kind), quiet=True)
        assert outcomes[kind].failure is None, outcomes[kind].failure
    assert shard_table(tmp_path / "auto") == shard_table(tmp_path / "local")
    for tar in sorted((tmp_path / "local").glob("shards/*.tar")):
        assert (tmp_path / "auto" / "shards" / tar.name).read_bytes() == tar.read_bytes()
    assert outcomes["auto"].total == outcomes["local"].total
