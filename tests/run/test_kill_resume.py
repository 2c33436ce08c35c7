"""Kill the real CLI (SIGKILL, whole process group) at several moments, rerun it, and check
that the final dataset equals an uninterrupted build's exactly: no sample lost, none
duplicated, every file complete, no temp file that a reader could take for a finished one."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import soundfile
from PIL import Image

from vidal.io.store import is_temp
from vidal.media.synth import make_clip_set
from vidal.run.build import digest

VIDAL = Path(sys.executable).with_name("vidal")
SHARDS = 3
STAGES = "stages=[probe,keyframes,audio,clip]"  # the media stages: no model weights to load


@pytest.fixture(scope="module")
def kill_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kill_source")
    make_clip_set(folder, 8, seed=3, duration=(1.5, 2.5), size=(160, 120))
    return folder


class Run:
    def __init__(self, returncode: int, seconds: float, stderr: str, killed: bool, helpers=()):
        self.returncode, self.seconds, self.stderr, self.killed = (
            returncode,
            seconds,
            stderr,
            killed,
        )
        self.helpers = set(helpers)  # its Python child processes when it was killed


def _python_descendants(root: int) -> set[int]:
    """The processes below `root` that are not ffmpeg (worker and manager processes)."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            pid = int(entry.name)
            parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
            names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {p for p in found if not names[p].startswith("ffmpeg")}


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def run_cli(
    source: Path,
    out: Path,
    *extra: str,
    kill_after_plan=None,
    kill_when=None,
    watch=None,
    runner: str = "--local",
    kill_group: bool = True,
):
    """The CLI in its own process group. SIGKILL the whole group `kill_after_plan` seconds
    after the run wrote its plan (so the interpreter's start-up time, which varies with the
    machine's load, does not shift the moment), or as soon as `kill_when(out)` is true.
    `watch(out, elapsed)` is called on every poll. `kill_group=False` kills the CLI's process
    alone, as the out-of-memory killer would."""
    argv = [str(VIDAL), "build", "--source", str(source), "--out", str(out), runner]
    argv += ["--shards", str(SHARDS), "--quiet", "--pipeline", "demo", STAGES, *extra]
    argv = [a for a in argv if a]
    err_path = out.parent / f".{out.name}.stderr"
    plan = out / "work" / "plan.json"
    plan_before = plan.stat().st_mtime_ns if plan.exists() else None
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        started = time.monotonic()
        planned_at = None
        killed, helpers = False, set()
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if watch:
                    watch(out, now - started)
                if planned_at is None and kill_after_plan is not None and plan.exists():
                    with contextlib.suppress(FileNotFoundError):
                        if plan.stat().st_mtime_ns != plan_before:
                            planned_at = now
                due = planned_at is not None and now - planned_at >= kill_after_plan
                if due or (kill_when is not None and kill_when(out)):
                    helpers = _python_descendants(proc.pid)
                    if kill_group:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        os.kill(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                if now - started > 180:
                    raise TimeoutError(f"vidal build ran for more than 180 s: {argv}")
                time.sleep(0.005)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stderr = err_path.read_text(errors="replace")
    killed = killed and proc.returncode == -signal.SIGKILL
    return Run(proc.returncode, time.monotonic() - started, stderr, killed, helpers)


def _tar_read_fully(path: Path) -> list[str]:
    """Every member read to its end; returns the keys in member order."""
    keys = []
    with tarfile.open(path) as tar:
        for member in tar:
            data = tar.extractfile(member).read()
            assert len(data) == member.size, (path, member.name)
            keys.append(member.name.split(".", 1)[0])
    return keys


def check_nothing_half_written(out: Path) -> None:
    """Every file that does not carry a temp name is complete and consistent."""
    for dirpath, _, names in os.walk(out):
        for name in names:
            path = Path(dirpath) / name
            if is_temp(name):
                assert name.startswith(".") and ".tmp-" in name
                continue
            if name.endswith(".tar"):
                _tar_read_fully(path)
            elif name.endswith(".parquet"):
                pq.read_table(path)
            elif name.endswith(".json"):
                json.loads(path.read_text())
            elif name.endswith(".jpg"):
                with Image.open(path) as img:
                    img.load()
            elif name.endswith(".flac"):
                data, rate = soundfile.read(path)
                assert len(data) > 0 and rate == 16000
            elif name.endswith(".mp4"):
                with av.open(str(path)) as container:
                    assert sum(1 for _ in container.decode(video=0)) > 0
            else:
                assert path.stat().st_size > 0, path  # a format this check does not know
    # a marker vouches for its rows: they are there, complete, and the ones it counted
    for marker_path in out.glob("work/*/*.done.json"):
        marker = json.loads(marker_path.read_text())
        rows = pq.read_table(marker_path.with_name(marker_path.name.split(".")[0] + ".parquet"))
        records = dict(
            zip(rows.column("key").to_pylist(), rows.column("record").to_pylist(), strict=True)
        )
        assert marker["samples"] == len(records)
        assert marker["digest"] == digest(records)
    # a shard's stats file is written last: when it is there, so are its tar and parquet
    for stats_path in out.glob("shards/*.stats.json"):
        stats = json.loads(stats_path.read_text())
        base = stats_path.name[: -len(".stats.json")]
        tar_keys = set(_tar_read_fully(out / "shards" / f"{base}.tar"))
        rows = pq.read_table(out / "shards" / f"{base}.parquet").to_pylist()
        assert len(rows) == stats["samples_in"]
        assert tar_keys == {r["key"] for r in rows if r["status"] == "ok"}
        assert len(tar_keys) == stats["kept"]


def snapshot(out: Path) -> dict:
    """What a reader sees: (shard, key) per tar member set, parquet rows, the tar bytes."""
    tars = sorted((out / "shards").glob("vidal-*.tar"))
    occurrences = collections.Counter()
    members = {}
    for tar in tars:
        shard = int(tar.name[6:11])
        keys = _tar_read_fully(tar)
        members[shard] = keys
        for key in set(keys):
            occurrences[(shard, key)] += 1
    key_owners = collections.Counter(k for _, k in occurrences)
    rows = {}
    for parquet in sorted((out / "shards").glob("vidal-*.parquet")):
        shard = int(parquet.name[6:11])
        for row in pq.read_table(parquet).to_pylist():
            rows[(shard, row["key"])] = row["status"]
    dataset = json.loads((out / "dataset.json").read_text())
    return {
        "tar_names": [t.name for t in tars],
        "pairs": set(occurrences),
        "dup_pairs": [p for p, n in occurrences.items() if n > 1],
        "keys_in_two_shards": [k for k, n in key_owners.items() if n > 1],
        "members": members,
        "rows": rows,
        "tar_bytes": {t.name: t.read_bytes() for t in tars},
        "status": dataset["status"],
        "totals": {k: v for k, v in dataset["totals"].items()},
    }


@pytest.fixture(scope="module")
def reference(kill_source, tmp_path_factory):
    """An uninterrupted build, with the times at which its phases began."""
    out = tmp_path_factory.mktemp("reference") / "out"
    seen: dict[str, float] = {}

    def watch(out: Path, elapsed: float) -> None:
        if "plan" not in seen and (out / "work" / "plan.json").exists():
            seen["plan"] = elapsed
        if "pack" not in seen and (out / "shards").exists():
            seen["pack"] = elapsed

    run = run_cli(kill_source, out, watch=watch)
    assert run.returncode == 0, run.stderr
    snap = snapshot(out)
    assert snap["status"] == "ok"
    assert len(snap["rows"]) == 8
    assert len(snap["pairs"]) == sum(1 for s in snap["rows"].values() if s == "ok") > 0
    assert not snap["dup_pairs"] and not snap["keys_in_two_shards"]
    seen.setdefault("plan", run.seconds * 0.5)
    seen.setdefault("pack", run.seconds * 0.9)
    return {"snapshot": snap, "seconds": run.seconds, **seen}


def assert_same_as_reference(out: Path, reference: dict) -> None:
    check_nothing_half_written(out)
    snap, ref = snapshot(out), reference["snapshot"]
    assert snap["tar_names"] == [f"vidal-{i:05d}.tar" for i in range(SHARDS)]
    assert not snap["dup_pairs"], snap["dup_pairs"]
    assert not snap["keys_in_two_shards"], snap["keys_in_two_shards"]
    assert snap["pairs"] == ref["pairs"]
    assert snap["members"] == ref["members"]
    assert snap["rows"] == ref["rows"]
    assert snap["status"] == "ok"
    assert snap["totals"] == ref["totals"]
    assert snap["tar_bytes"] == ref["tar_bytes"]
    # nothing under shards/ that is not a finished file; temp names elsewhere only
    assert [p.name for p in (out / "shards").iterdir() if is_temp(p.name)] == []
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        f"vidal-{i:05d}.{ext}" for i in range(SHARDS) for ext in ("tar", "parquet", "stats.json")
    )


def test_killed_during_the_stages_then_resumed(kill_source, reference, tmp_path):
    """Killed a while after planning, in the middle of the stages (the moment is a share of
    the time the uninterrupted build spent between its plan and its first shard file)."""
    out = tmp_path / "out"
    delay = 0.4 * max(0.05, reference["pack"] - reference["plan"])
    killed = run_cli(kill_source, out, kill_after_plan=delay)
    if killed.killed:
        assert not (out / "dataset.json").exists()
    else:
        assert killed.returncode == 0, killed.stderr  # it finished before the moment came
    check_nothing_half_written(out)
    resumed = run_cli(kill_source, out)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert_same_as_reference(out, reference)


def _shard_file_appeared(out: Path) -> bool:
    shards = out / "shards"
    try:
        return any(True for _ in os.scandir(shards))
    except FileNotFoundError:
        return False


def test_killed_while_writing_a_shard(kill_source, reference, tmp_path):
    """The moment a shard's first file (a temp tar) appears: the kill lands mid-pack."""
    out = tmp_path / "out"
    killed = run_cli(kill_source, out, kill_when=_shard_file_appeared)
    assert killed.killed, "the build ended before packing began?"
    check_nothing_half_written(out)
    assert not (out / "dataset.json").exists()
    resumed = run_cli(kill_source, out)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(out, reference)


def test_killed_and_resumed_several_times_in_a_row(kill_source, reference, tmp_path):
    """Shards finish one by one while the pass streams, so a run persists some shards' stage
    rows before it dies. Three kills in a row, each at a later point of the work: mid-shard (a
    payload written, no marker yet), right after a (stage, shard) finished, and while packing.
    Then a run to the end."""
    out = tmp_path / "out"
    waves = ""

    def payload_written(out: Path) -> bool:
        return any(out.glob("work/keyframes/*/*.jpg"))

    markers_at_start = set()

    def new_marker(out: Path) -> bool:
        return bool(set(out.glob("work/clip/*.done.json")) - markers_at_start)

    first = run_cli(kill_source, out, waves, kill_when=payload_written)
    assert first.killed
    check_nothing_half_written(out)
    markers_at_start = set(out.glob("work/clip/*.done.json"))
    second = run_cli(kill_source, out, waves, kill_when=new_marker)
    assert second.killed
    check_nothing_half_written(out)
    assert set(out.glob("work/clip/*.done.json")) > markers_at_start  # progress was kept
    third = run_cli(kill_source, out, waves, kill_when=_shard_file_appeared)
    assert third.killed
    check_nothing_half_written(out)
    final = run_cli(kill_source, out, waves)
    assert final.returncode == 0, final.stderr
    assert_same_as_reference(out, reference)


def test_processes_runner_workers_die_with_a_killed_build(kill_source, reference, tmp_path):
    """runner.kind=processes, and only the build's own process is killed, mid-shard: its
    worker and manager processes go with it (no worker keeps writing into an output whose lock
    is gone), and the rerun equals an uninterrupted build."""
    out = tmp_path / "out"

    def payload_written(out: Path) -> bool:
        return any(out.glob("work/keyframes/*/*.jpg"))

    killed = run_cli(
        kill_source, out, runner="--processes", kill_when=payload_written, kill_group=False
    )
    assert killed.killed and killed.helpers, "the build ended before a worker wrote?"
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in killed.helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in killed.helpers if _alive(p)]
    check_nothing_half_written(out)
    resumed = run_cli(kill_source, out, runner="--processes")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_as_reference(out, reference)


MODEL = [
    "stages=[probe,keyframes,vl_filter,clip]",
    "vl_filter.model=tiny:clip",
    "vl_filter.batch_size=2",
    "vl_filter.num_cpus=0.5",
    "runner.num_cpus=2",
]


@pytest.mark.slow
def test_killed_while_a_model_actor_is_mid_shard_on_ray(kill_source, tmp_path):
    """On Ray, with the model stage as an actor pool: killed once the actor has finished its
    first shard, with others in flight. The resumed build equals an uninterrupted one."""
    reference_out = tmp_path / "reference"
    ref = run_cli(kill_source, reference_out, *MODEL, runner="--ray")
    assert ref.returncode == 0, ref.stderr
    assert "Progress bars disabled" not in ref.stderr  # Ray Data's notes stay in its log
    assert "execution finished" not in ref.stderr
    out = tmp_path / "out"

    def model_mid_shard(out: Path) -> bool:
        return any(out.glob("work/vl_filter/*.done.json"))

    killed = run_cli(kill_source, out, *MODEL, runner="--ray", kill_when=model_mid_shard)
    assert killed.killed, "the build ended before the model stage finished a shard?"
    check_nothing_half_written(out)
    resumed = run_cli(kill_source, out, *MODEL, runner="--ray")
    assert resumed.returncode == 0, resumed.stderr
    check_nothing_half_written(out)
    snap, want = snapshot(out), snapshot(reference_out)
    for field in ("tar_names", "pairs", "members", "rows", "status", "totals", "tar_bytes"):
        assert snap[field] == want[field], field
    assert not list(out.glob("work/*/*.parts"))  # nothing in flight is left behind
