"""Symlinked sidecars and videos: a source folder never leads out of itself unless the user
opts in (`source.follow_symlinks`), and sidecars are read up to a cap."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidal.io.sources import SourceOptions, list_source
from vidal.run.jobs import build

CREDENTIALS = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def layout(clip_bank, tmp_path) -> dict[str, Path]:
    """src/ with good clips and links to a credentials file and a video outside it."""
    src, outside = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    outside.mkdir()
    (outside / "credentials").write_text(CREDENTIALS)
    shutil.copy(clip_bank / "synth-002.mp4", outside / "private.mp4")
    for name in ("a", "b", "c"):
        shutil.copy(clip_bank / "synth-000.mp4", src / f"{name}.mp4")
    (src / "a.txt").symlink_to(outside / "credentials")
    (src / "b.json").symlink_to(outside / "credentials")
    (src / "c.txt").write_text("a plain caption #ok")
    (src / "private.mp4").symlink_to(outside / "private.mp4")
    (src / "inside.mp4").symlink_to(src / "c.mp4")  # a link inside the folder is fine
    (src / "linked_folder").symlink_to(outside, target_is_directory=True)
    return {"src": src, "outside": outside}


def _by_name(samples) -> dict:
    return {s.meta["name"]: s for s in samples}


def test_links_out_of_the_folder_fail_their_sample(layout):
    samples = _by_name(list_source(str(layout["src"])))
    assert set(samples) == {"a.mp4", "b.mp4", "c.mp4", "private.mp4", "inside.mp4"}
    for name in ("a.mp4", "b.mp4", "private.mp4"):
        error = samples[name].errors["source"]
        assert error.startswith("symlink_outside: "), error
        assert "follow_symlinks" in error
    assert samples["c.mp4"].ok and samples["c.mp4"].meta["hashtags"] == ["#ok"]
    assert samples["inside.mp4"].ok
    assert samples["inside.mp4"].source == str((layout["src"] / "c.mp4").resolve())
    assert CREDENTIALS not in json.dumps([s.meta for s in samples.values()])


def test_follow_symlinks_opts_in(layout):
    samples = list(list_source(str(layout["src"]), SourceOptions(follow_symlinks=True)))
    by_key = {s.key.rsplit("-", 1)[0]: s for s in samples}
    assert set(by_key) == {"a", "b", "c", "private", "inside", "linked_folder_private"}
    # b.json was read this time: the credentials file is no JSON object
    assert by_key["b"].errors["source"].startswith("bad_sidecar: b.json is not a JSON object")
    assert all(s.ok for k, s in by_key.items() if k != "b")
    assert CREDENTIALS in by_key["a"].meta["title"]
    private = str((layout["outside"] / "private.mp4").resolve())
    assert by_key["private"].source == by_key["linked_folder_private"].source == private


def test_followed_link_loops_end(clip_bank, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(clip_bank / "synth-000.mp4", src / "sub" / "v.mp4")
    (src / "sub" / "up").symlink_to(src, target_is_directory=True)
    (src / "sub" / "self").symlink_to(src / "sub", target_is_directory=True)
    samples = list(list_source(str(src), SourceOptions(follow_symlinks=True)))
    assert [Path(s.source).name for s in samples] == ["v.mp4"]


def test_build_publishes_no_linked_secret(layout, tmp_path, local_config):
    out = tmp_path / "out"
    config = local_config("shards=1", "stages=[probe]")
    outcome = build(config, str(layout["src"]), str(out), quiet=True)
    assert outcome.failure is None
    table = pq.read_table(out / "shards" / "vidal-00000.parquet")
    rows = {r["title"]: r for r in table.to_pylist()}
    assert rows["a"]["error_reason"] == "source: symlink_outside"
    assert rows["private"]["error_reason"] == "source: symlink_outside"
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".tar":
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    data = b"".join(tar.extractfile(m).read() for m in tar if m.isfile())
            assert CREDENTIALS.encode() not in data, path


def test_big_txt_sidecar_is_cut_and_big_json_fails(clip_bank, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("t", "j", "deep"):
        shutil.copy(clip_bank / "synth-000.mp4", src / f"{name}.mp4")
    (src / "t.txt").write_text("first words #tag " + "x " * 200_000)
    (src / "j.json").write_text(json.dumps({"title": "t", "pad": "y" * 70_000}))
    (src / "deep.json").write_text("[" * 60_000 + "]" * 60_000)  # deeper than Python recurses
    samples = _by_name(list_source(str(src), SourceOptions(max_title_chars=100)))
    assert samples["t.mp4"].ok and samples["t.mp4"].meta["title"].startswith("first words")
    assert len(samples["t.mp4"].meta["title"]) <= 100
    assert samples["t.mp4"].meta["hashtags"] == ["#tag"]
    assert samples["j.mp4"].errors["source"].startswith("bad_sidecar: j.json is larger than")
    assert samples["deep.mp4"].errors["source"].startswith("bad_sidecar")
    smaller = _by_name(list_source(str(src), SourceOptions(max_sidecar_bytes=1 << 20)))
    assert smaller["j.mp4"].ok  # the cap is a switch


def test_fifo_sidecar_does_not_block_planning(clip_bank, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", src / "v.mp4")
    os.mkfifo(src / "v.txt")
    os.mkfifo(src / "w.mp4")  # a FIFO named like a video is no video
    found: list = []
    worker = threading.Thread(target=lambda: found.extend(list_source(str(src))), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "planning blocked on a FIFO"
    assert [s.meta["name"] for s in found] == ["v.mp4"] and found[0].ok
