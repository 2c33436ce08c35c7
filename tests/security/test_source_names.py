"""File names a stranger chose: a name that is not UTF-8 is one failed sample, not a crashed
build; keys start with a letter or digit, whatever the name starts with."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vidal.io.keys import is_safe_key
from vidal.io.sources import SourceError, list_source, make_key
from vidal.run.jobs import build

LATIN1 = os.fsdecode(b"caf\xe9 cr\xe8me.mp4")  # bytes that are not UTF-8, as a str path
LATIN1_TOO = os.fsdecode(b"caf\xe8 cr\xe8me.mp4")  # differs only in a byte that is not UTF-8


def test_non_utf8_name_is_a_failed_sample_with_a_key(clip_bank, tmp_path):
    for name in (LATIN1, LATIN1_TOO, "good.mp4"):
        shutil.copy(clip_bank / "synth-000.mp4", os.path.join(tmp_path, name))
    samples = list(list_source(str(tmp_path)))
    bad = [s for s in samples if not s.ok]
    assert len(samples) == 3 and len(bad) == 2
    for sample in bad:
        assert sample.errors["source"].startswith("bad_name: "), sample.errors
        assert "not UTF-8" in sample.errors["source"]
        sample.to_json().encode("utf-8")  # everything recorded is valid UTF-8
        assert "\ufffd" in sample.source and is_safe_key(sample.key)
    assert len({s.key for s in bad}) == 2  # keys hash the name's bytes: no collision


def test_build_with_a_non_utf8_name_finishes(clip_bank, tmp_path, local_config):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip_bank / "synth-000.mp4", os.path.join(src, LATIN1))
    shutil.copy(clip_bank / "synth-001.mp4", src / "good.mp4")
    (src / "good.json").write_text(json.dumps({"title": "fine"}))
    out = tmp_path / "out"
    outcome = build(local_config("shards=2", "stages=[probe]"), str(src), str(out), quiet=True)
    assert outcome.failure is None and outcome.exit_code == 0
    rows = [r for p in out.glob("shards/*.parquet") for r in pq.read_table(p).to_pylist()]
    status = sorted((r["status"], r["error_reason"]) for r in rows)
    assert status == [("failed", "source: bad_name"), ("ok", None)]
    assert json.loads((out / "dataset.json").read_text())["totals"]["failed"] == 1


def test_keys_start_with_a_letter_or_digit(clip_bank, tmp_path):
    names = ["-rf.mp4", "--help.mp4", "_-_.mp4", "-.mp4", ".hidden.mp4", "ok-.mp4"]
    for name in names:
        shutil.copy(clip_bank / "synth-000.mp4", tmp_path / name)
    keys = [s.key for s in list_source(str(tmp_path))]
    assert len(set(keys)) == len(names)
    assert all(is_safe_key(k) and k[0].isalnum() for k in keys), keys
    assert make_key("-rf", "-rf.mp4").startswith("rf-")


def test_key_rule_holds_for_manifest_ids(tmp_path):
    rows = [{"url": f"https://example.com/{i}.mp4", "id": i} for i in ("-x", "../../y", "", "é")]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keys = [s.key for s in list_source(str(manifest))]
    assert all(is_safe_key(k) for k in keys) and len(set(keys)) == 4
    assert not any(Path(k).is_absolute() for k in keys)


def test_source_folder_that_is_not_utf8_is_one_clear_error(clip_bank, tmp_path):
    folder = os.path.join(tmp_path, os.fsdecode(b"vid\xe9os"))
    os.mkdir(folder)
    shutil.copy(clip_bank / "synth-000.mp4", os.path.join(folder, "a.mp4"))
    with pytest.raises(SourceError, match="is not UTF-8"):
        list(list_source(folder))
