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
    records = {name: tmp_path / f"{name}.txt" for name in ("cpu", "model", "after")}
    for record in records.values():
        record.touch()
    cpu_record, model_record = records["cpu"], records["model"]
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
        # the same output with a CPU stage added: the pass runs only that one (the model
        # stage's rows are done), so it goes to the pool, not to Ray
        builder = Builder(config, str(good_source), str(tmp_path / "model"), runner)
        model = ModelSetupPidStage(record_to=str(model_record))
        builder.stages = [*config.pipeline(), model, SetupPidStage(record_to=str(records["after"]))]
        builder.run_stages()
        assert {_parent(pid) for pid in _pids(records["after"])} == {os.getpid()}
        assert _pids(model_record) == {model_pid}  # not loaded again
    finally:
        runner.shutdown()
    inputs = set(_rows(tmp_path / "cpu", "probe", 2))
    assert set(_rows(tmp_path / "cpu", "setup_pid", 2)) == inputs
    assert set(_rows(tmp_path / "model", "model_setup_pid", 2)) == inputs


def _no_ray(*args, **kwargs):
    raise AssertionError("a pass of CPU stages started Ray")


def test_a_default_build_of_cpu_stages_equals_the_local_build_without_ray(
    good_source, local_config, tmp_path, monkeypatch
):
    stages = "stages=[probe,keyframes,audio,clip]"
    assert load_config("vidal10m").runner.kind == "auto"  # what a plain `vidal build` runs
    monkeypatch.setattr("vidal.run.ray_runner.RayRunner", _no_ray)
    outcomes = {}
    for kind in ("local", "auto"):
        config = local_config("shards=3", stages, f"runner.kind={kind}", "runner.num_cpus=2")
        outcomes[kind] = build(config, str(good_source), str(tmp_path / kind), quiet=True)
        assert outcomes[kind].failure is None, outcomes[kind].failure
    assert shard_table(tmp_path / "auto") == shard_table(tmp_path / "local")
    for tar in sorted((tmp_path / "local").glob("shards/*.tar")):
        assert (tmp_path / "auto" / "shards" / tar.name).read_bytes() == tar.read_bytes()
    assert outcomes["auto"].total == outcomes["local"].total


def test_a_cluster_address_puts_every_pass_on_ray(local_config, monkeypatch):
    """`ray job submit` sets RAY_ADDRESS: a build started so joins that cluster for every
    pass, as `--ray-address` does, rather than running its CPU passes on the head node."""
    monkeypatch.setattr("vidal.run.ray_runner.RayRunner", lambda config: ("ray", config))
    config = local_config("runner.kind=auto")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert make_runner(config.runner) == ("ray", config.runner)
    monkeypatch.delenv("RAY_ADDRESS")
    with_address = local_config("runner.kind=auto", "runner.ray_address=auto").runner
    assert make_runner(with_address) == ("ray", with_address)
