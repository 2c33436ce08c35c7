"""The `vidal` command line: usage errors, one-line errors for bad input (exit 2), exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vidal.cli import main
from vidal.media.ffmpeg import ffmpeg_version

VIDAL = Path(sys.executable).with_name("vidal")


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("vidal: ")
    return lines[0]


def test_build_without_source_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--source" in err
    assert not (tmp_path / "out").exists()


def test_build_without_out_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--source", str(tmp_path)])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_nonexistent_source_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    code = main(["build", "--source", str(missing), "--out", str(tmp_path / "out"), "--local"])
    assert code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(missing) in line
    assert not list((tmp_path / "out").glob("shards/*.tar"))


def test_console_script_nonexistent_source(tmp_path):
    """The installed `vidal` script itself: exit 2, one line, no traceback."""
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [str(VIDAL), "build", "--source", str(missing), "--out", str(tmp_path / "o"), "--local"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(missing) in _one_line_error(proc.stderr)


def test_source_that_is_neither_folder_nor_manifest(tmp_path, capsys):
    odd = tmp_path / "notes.docx"
    odd.write_bytes(b"hello")
    code = main(["build", "--source", str(odd), "--out", str(tmp_path / "out"), "--local"])
    assert code == 2
    assert "notes.docx" in _one_line_error(capsys.readouterr().err)


def test_manifest_without_url_or_path_exits_2(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("title,hashtags\nhello world,#a\n")
    code = main(["build", "--source", str(manifest), "--out", str(tmp_path / "o"), "--local"])
    assert code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "url" in line and "path" in line


@pytest.mark.parametrize(
    "override, fragment", [("clip.crf=abc", "clip.crf"), ("nosuchkey=1", "nosuchkey")]
)
def test_bad_override_exits_2_naming_the_key(tmp_path, good_source, capsys, override, fragment):
    argv = ["build", "--source", str(good_source), "--out", str(tmp_path / "o"), "--local"]
    code = main([*argv, override])
    assert code == 2
    assert fragment in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_run_of_a_stage_not_in_the_pipeline_exits_2(tmp_path, good_source, capsys):
    argv = ["run", "depthless", "--source", str(good_source), "--out", str(tmp_path / "o")]
    code = main([*argv, "--local", "--pipeline", "demo"])
    assert code == 2
    assert "depthless" in _one_line_error(capsys.readouterr().err)


def test_run_without_source_on_an_unplanned_output_exits_2(tmp_path, capsys):
    code = main(["run", "probe", "--out", str(tmp_path / "o"), "--local", "--pipeline", "demo"])
    assert code == 2
    assert "--source" in _one_line_error(capsys.readouterr().err)


def test_build_succeeds_and_honours_shards_and_pipeline(tmp_path, good_source):
    out = tmp_path / "out"
    argv = ["build", "--source", str(good_source), "--out", str(out), "--local", "--quiet"]
    stages = "stages=[probe,keyframes,audio,clip]"
    code = main([*argv, "--pipeline", "demo", "--shards", "3", "clip.short_side=128", stages])
    assert code == 0
    assert sorted(p.name for p in (out / "shards").glob("*.tar")) == [
        f"vidal-{i:05d}.tar" for i in range(3)
    ]
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["status"] == "ok"
    assert dataset["totals"]["samples_in"] == len(list(good_source.glob("*.mp4")))
    clip_rows = json.loads(next((out / "work" / "clip").glob("*.done.json")).read_text())
    assert clip_rows["stage"] == "clip"
    # which ffmpeg made the bytes: in dataset.json and in every sample's lineage
    assert dataset["ffmpeg"] == ffmpeg_version() and dataset["stages"]["clip"]["ffmpeg"]
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        lineage = json.loads(tar.extractfile(member).read())["lineage"]
    assert lineage["clip"]["ffmpeg"] == lineage["audio"]["ffmpeg"] == ffmpeg_version()


def test_run_accepts_overrides_after_the_options(tmp_path, good_source):
    """`vidal run <stage> --source S --out O key=value`, the same order as `vidal build`."""
    out = tmp_path / "o"
    argv = ["run", "probe", "--source", str(good_source), "--out", str(out), "--local"]
    code = main([*argv, "--quiet", "--pipeline", "demo", "--shards", "2", "probe.min_side=8"])
    assert code == 0
    marker = json.loads((out / "work" / "probe" / "00000.done.json").read_text())
    assert marker["stage"] == "probe"


def test_continuing_an_output_with_another_shard_count_exits_2(tmp_path, good_source, capsys):
    out = tmp_path / "o"
    argv = ["run", "probe", "--source", str(good_source), "--out", str(out), "--local"]
    argv += ["--quiet", "--pipeline", "demo"]
    assert main([*argv, "--shards", "2"]) == 0
    capsys.readouterr()
    assert main([*argv, "--shards", "3"]) == 2
    assert "--shards 2" in _one_line_error(capsys.readouterr().err)
    assert not (out / "work" / "probe" / "00002.done.json").exists()


def test_build_of_an_empty_folder_fails_with_exit_1(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["build", "--source", str(empty), "--out", str(tmp_path / "o"), "--local", "--quiet"]
    code = main([*argv, "--pipeline", "demo"])
    assert code == 1
    err = capsys.readouterr().err
    assert "no videos" in err and "Traceback" not in err
