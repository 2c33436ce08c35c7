"""The processes runner (`runner.kind=processes`): the local runner's results from a pool of
worker processes, each stage set up once per worker (a model stage in as many workers as its
concurrency), lost workers' shards run again, environmental failures left for a rerun."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
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
from vidal.run.process_runner import ATTEMPTS, SEND_TIMEOUT_S, ProcessRunner, usable_cpus
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
    """Kills the worker running it while `armed` exists, appending a line to `kills` each
    time: a worker lost mid-shard, as to the out-of-memory killer. `once` disarms it."""

    name: ClassVar[str] = "kill_once"
    armed: str = ""
    kills: str = ""
    once: bool = True

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        if os.path.exists(self.armed):
            with open(self.kills, "a") as f:
                f.write("killed\n")
            if self.once:
                os.remove(self.armed)
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


class TwoArgError(Exception):
    def __init__(self, code: int, detail: str):
        super().__init__(f"code {code}: {detail}")


@dataclass
class FailingSetupStage(Stage):
    """A stage whose setup raises an exception that pickle cannot rebuild."""

    name: ClassVar[str] = "failing_setup"

    def setup(self, ctx: StageContext) -> None:
        raise TwoArgError(7, "the model server refused")

    def process_batch(self, batch: list[Sample]) -> list[Sample]:
        return batch


@dataclass
class ModelSetupPidStage(SetupPidStage):
    name: ClassVar[str] = "model_setup_pid"
    uses_model: ClassVar[bool] = True


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


def _run_with(config, source, out, runner, *extra: Stage) -> None:
    builder = Builder(config, str(source), str(out), runner)
    builder.stages = [*config.pipeline(), *extra]
    builder.run_stages()


def test_a_lost_workers_shards_run_again_in_a_fresh_pool(good_source, local_config, tmp_path):
    config = local_config("shards=2", "stages=[probe]", "runner.num_cpus=2")
    armed, kills, out = tmp_path / "armed", tmp_path / "kills", tmp_path / "out"
    armed.touch()
    runner = ProcessRunner(config.runner)
    try:
        _run_with(
            config, good_source, out, runner, KillOnceStage(armed=str(armed), kills=str(kills))
        )
    finally:
        runner.shutdown()
    assert kills.read_text().splitlines() == ["killed"]  # a worker was lost, once
    inputs = {s.key for s in list_source(str(good_source))}
    assert set(_rows(out, "kill_once", 2)) == inputs  # every sample once, none lost


def test_a_worker_lost_every_time_stops_the_pass_and_a_rerun_finishes_it(
    good_source, local_config, tmp_path
):
    config = local_config("shards=2", "stages=[probe]", "runner.num_cpus=2")
    armed, kills, out = tmp_path / "armed", tmp_path / "kills", tmp_path / "out"
    armed.touch()
    stage = KillOnceStage(armed=str(armed), kills=str(kills), once=False)
    runner = ProcessRunner(config.runner)  # one runner for both runs: pools are replaced
    try:
        with pytest.raises(BuildIncomplete, match="BrokenProcessPool.*rerun the same command"):
            _run_with(config, good_source, out, runner, stage)
        assert len(kills.read_text().splitlines()) >= ATTEMPTS  # tried again, then gave up
        armed.unlink()
        _run_with(config, good_source, out, runner, stage)
    finally:
        runner.shutdown()
    inputs = {s.key for s in list_source(str(good_source))}
    assert set(_rows(out, "kill_once", 2)) == inputs


def test_an_exception_pickle_cannot_rebuild_is_said_not_a_broken_pool(
    good_source, local_config, tmp_path
):
    config = local_config("shards=2", "stages=[probe]", "runner.num_cpus=2")
    runner = ProcessRunner(config.runner)
    try:
        with pytest.raises(BuildIncomplete) as failed:
            _run_with(config, good_source, tmp_path / "out", runner, FailingSetupStage())
    finally:
        runner.shutdown()
    assert "TwoArgError: code 7: the model server refused" in str(failed.value)
    assert "BrokenProcessPool" not in str(failed.value)


def test_a_model_stage_loads_in_as_many_workers_as_its_concurrency(
    good_source, local_config, tmp_path
):
    """Four shards, two workers, a model stage of default concurrency (1, as on Ray): one
    worker runs the pass, so the model loads once."""
    config = local_config("shards=4", "stages=[probe]", "runner.num_cpus=2")
    record = tmp_path / "setups.txt"
    record.touch()
    runner = ProcessRunner(config.runner)
    try:
        _run_with(
            config, good_source, tmp_path / "out", runner, ModelSetupPidStage(record_to=str(record))
        )
    finally:
        runner.shutdown()
    assert len(record.read_text().split()) == 1


def test_usable_cpus_follow_the_cgroup_quota(tmp_path):
    mask = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path / "none") == mask  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == mask
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # --cpus 1.5
    assert usable_cpus(tmp_path) == min(mask, 2)
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(v1) == 1


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


def test_a_crawl_wave_runs_in_the_build_process(local_config, tmp_path):
    """map_samples (the crawl's search waves) stays in this process: one rate limiter for the
    whole crawl, as `search.rate_per_s` promises, not one per worker."""
    record = tmp_path / "setups.txt"
    samples = [Sample(key=f"k{i:03d}", shard=0, source=f"s{i}") for i in range(10)]
    runner = ProcessRunner(local_config("runner.num_cpus=2").runner)
    try:
        done = runner.map_samples(
            SetupPidStage(record_to=str(record)), StageContext(out=str(tmp_path)), samples
        )
    finally:
        runner.shutdown()
    assert [s.key for s in done] == [s.key for s in samples]
    assert {s.fields["setup_pid"]["pid"] for s in done} == {os.getpid()}


class StallingDisplay:
    """A progress display whose first update of a stage blocks longer than a worker's send
    timeout (planning's updates pass)."""

    def __init__(self, stage: str):
        self.stage, self.stalled = stage, False
        self.done: collections.Counter = collections.Counter()

    def add(self, label: str, total: int):
        def update(n: int, failed: int = 0) -> None:
            if label == self.stage and not self.stalled:
                self.stalled = True
                time.sleep(SEND_TIMEOUT_S + 1)
            self.done[label] += n

        return update


def test_counts_stay_exact_while_the_display_stalls(local_config, tmp_path):
    """A display that stalls (a terminal nobody reads) must not make the workers drop counts:
    the socket is drained by a thread of its own, whatever the display does."""
    manifest = tmp_path / "missing.jsonl"  # files that do not exist: each fails at probe, fast
    rows = [{"path": str(tmp_path / f"gone{i:02d}.mp4"), "title": f"t{i}"} for i in range(40)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = local_config("shards=2", "stages=[probe]", "probe.batch_size=1", "runner.num_cpus=2")
    display = StallingDisplay("probe")
    runner = ProcessRunner(config.runner)
    try:
        Builder(config, str(manifest), str(tmp_path / "out"), runner, display).run_stages()
    finally:
        runner.shutdown()
    assert display.stalled and display.done["probe"] == len(rows)  # 40 messages, none lost


def test_counts_folders_of_killed_builds_are_swept(local_config, monkeypatch):
    """A SIGKILLed build cannot remove its counts socket's folder: the next runner removes the
    folders of builds that are gone, and leaves a running build's alone."""
    tmp_path = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))  # short: a socket's address
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"vidal-counts-{gone.pid}-abc"
    alive = tmp_path / f"vidal-counts-{os.getppid()}-def"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "socket").touch()
    runner = ProcessRunner(local_config("runner.num_cpus=1").runner)
    try:
        ours = [p for p in tmp_path.iterdir() if p.name.startswith(f"vidal-counts-{os.getpid()}-")]
        assert not dead.exists() and alive.exists() and len(ours) == 1
    finally:
        runner.shutdown()
    assert not ours[0].exists()  # its own goes at shutdown
    shutil.rmtree(tmp_path)
