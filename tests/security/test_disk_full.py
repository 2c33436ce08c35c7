"""Issue 11, item 9: a full disk ends `vidal build` with exit 1 and one sentence (and
dataset.json saying so where it fits), not exit 3 with a traceback. The real thing: the output
is on a 160 KiB tmpfs mounted for the test (root, as on CI); where mounting is not allowed, the
same build meets ENOSPC from the store's writes instead."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess

import pytest

from vidal.cli import main


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True
    ).returncode == 0 if shutil.which("mount") else False  # fmt: skip
    if not mounted:  # no right to mount: every table write fails as a full disk would
        from vidal.io.store import Store

        def full(self, rel, table):
            raise OSError(errno.ENOSPC, "No space left on device", self.path(rel))

        monkeypatch.setattr(Store, "write_table", full)
    yield folder
    if mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_exit_1_with_one_sentence(small_disk, good_source, capsys):
    out = small_disk / "out"
    argv = ["build", "--source", str(good_source), "--out", str(out), "--pipeline", "demo"]
    argv += ["--local", "--quiet", "--shards", "2", "stages=[probe,keyframes,audio,clip]"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidal: build failed: the disk is full")
    assert "rerun the same command" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    recorded = json.loads((out / "dataset.json").read_text())  # it fits once the temp files go
    assert recorded["status"] == "failed" and recorded["failure"].startswith("the disk is full")
