"""Issue 11, item 8: one writer per --out. A second `vidal build` (or refilter, dedup, run,
crawl, export) on an output another vidal process is writing is refused with one sentence
naming the holder and exit 1; a killed holder leaves no stale lock on a local disk; on an
object store the lock is a file written where none is, taken over once its holder is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vidal.cli import main
from vidal.run import lock

HOLD = (
    "import sys, time\n"
    "from vidal.run.lock import out_lock\n"
    "with out_lock(sys.argv[1], 'build'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(60)\n"
)


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock on tmp_path/out (until it is killed)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_one_sentence(holder, good_source, capsys):
    out, proc = holder
    build = ["build", "--source", str(good_source), "--out", str(out), "--pipeline", "demo"]
    build += ["--local", "--quiet", "--shards", "1", "stages=[probe]"]
    for argv in (build, ["refilter", "--out", str(out), "--threshold", "0.2"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"{out} is being written by vidal build (pid {proc.pid} on " in err
        assert f"delete {out}/work/lock.json and rerun" in err
    assert not (out / "shards").exists()  # the refused build wrote nothing
    proc.send_signal(signal.SIGKILL)  # a holder that dies leaves no stale lock behind
    proc.wait()
    assert main(build) == 0
    assert (out / "shards" / "vidal-00000.tar").exists()
    assert not (out / "work" / "lock.json").exists()  # released at the end


def test_the_lock_on_an_object_store_is_best_effort_and_expires():
    out = f"memory://vidal-lock-test-{os.getpid()}/out"
    refused = pytest.raises(lock.OutputLocked, match="is being written by vidal build")
    with lock.out_lock(out, "build") as owner, refused, lock.out_lock(out, "dedup"):
        pass
    with lock.out_lock(out, "dedup"):  # released: free again
        pass
    import fsspec

    fs = fsspec.filesystem("memory")
    path = out.replace("memory://", "/") + "/work/lock.json"
    stale = {**owner, "host": "elsewhere", "time": time.time() - lock.STALE_AFTER_S - 1}
    fs.pipe(path, json.dumps(stale).encode())
    with lock.out_lock(out, "build"):  # a holder silent for too long is taken over
        pass
    fresh = {**stale, "time": time.time()}
    fs.pipe(path, json.dumps(fresh).encode())
    with pytest.raises(lock.OutputLocked), lock.out_lock(out, "build"):
        pass


def test_two_concurrent_builds_one_is_refused(good_source, tmp_path):
    """The reproduction: two builds into one --out with different --shards at once."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vidal.cli", "build", "--source", str(good_source), "--out",
             str(out), "--pipeline", "demo", "--local", "--quiet", "--shards", str(shards),
             "stages=[probe,clip]"],
            stderr=subprocess.PIPE, text=True, env=env,
        )
        for shards in (2, 3)
    ]  # fmt: skip
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 1]
    assert "is being written by vidal build (pid " in results[1][1]
    import glob
    import tarfile

    keys = []
    for shard in glob.glob(str(out / "shards" / "vidal-*.tar")):
        with tarfile.open(shard) as tar:
            keys += [m.name.split(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".mp4")]
    assert len(keys) == len(set(keys)) == len(list(good_source.glob("*.mp4")))
