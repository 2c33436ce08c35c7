"""Which ffmpeg vidal runs: the bundled static build unless VIDAL_FFMPEG names another; an
ffmpeg on PATH changes nothing (the same bytes on every machine); the version is known."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import imageio_ffmpeg
import pytest

from vidal.media.ffmpeg import ffmpeg_exe, ffmpeg_version, run_ffmpeg
from vidal.stages.audio import AudioStage
from vidal.stages.clip import ClipStage
from vidal.stages.keyframes import KeyframesStage


@pytest.fixture
def fresh_ffmpeg(monkeypatch):
    """ffmpeg_exe() decides again under this test's environment, and again after it."""
    ffmpeg_exe.cache_clear()
    monkeypatch.delenv("VIDAL_FFMPEG", raising=False)
    yield monkeypatch
    ffmpeg_exe.cache_clear()


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _tiny_clip(dst: Path) -> None:
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=d=0.2:s=32x32:r=10", "-pix_fmt", "yuv420p", str(dst)])


def test_an_ffmpeg_on_path_is_not_used(fresh_ffmpeg, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    _script(fake / "ffmpeg", f": > {tmp_path}/path-ffmpeg-ran\nexit 1\n")
    fresh_ffmpeg.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    assert ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    _tiny_clip(tmp_path / "a.mp4")
    assert (tmp_path / "a.mp4").stat().st_size > 0
    assert not (tmp_path / "path-ffmpeg-ran").exists()


def test_vidal_ffmpeg_chooses_another_and_its_version_is_recorded(fresh_ffmpeg, tmp_path):
    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    other = _script(
        tmp_path / "my-ffmpeg",
        'if [ "$1" = -version ]; then echo "ffmpeg version 6.6.6-test Copyright (c)"; exit 0; fi\n'
        f': > {tmp_path}/other-ran\nexec {bundled} "$@"\n',
    )
    fresh_ffmpeg.setenv("VIDAL_FFMPEG", str(other))
    assert ffmpeg_exe() == str(other)
    _tiny_clip(tmp_path / "b.mp4")
    assert (tmp_path / "other-ran").exists()
    assert ffmpeg_version() == "6.6.6-test"
    # the stages whose outputs ffmpeg makes record it; a decode-only stage does not claim it
    assert ClipStage().lineage()["ffmpeg"] == "6.6.6-test"
    assert AudioStage().lineage()["ffmpeg"] == "6.6.6-test"
    assert "ffmpeg" not in KeyframesStage().lineage()


def test_version_of_the_bundled_build(fresh_ffmpeg):
    version = ffmpeg_version()
    assert version[:1].isalnum() and not version.startswith("unavailable"), version


def test_a_missing_ffmpeg_gives_a_version_sentence_not_an_exception(fresh_ffmpeg):
    fresh_ffmpeg.setenv("VIDAL_FFMPEG", "/nonexistent/ffmpeg")
    assert ffmpeg_version().startswith("unavailable: ffmpeg_missing")
