"""Tests of vidal.media.mp4_header: the facts a crawl keeps from an MP4's boxes equal PyAV's
reading of the same file, and anything it does not describe plainly is left to PyAV (None)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidal.media import synth
from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.mp4_header import read_header
from vidal.media.probe import probe_pyav

X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
TONE = ["-f", "lavfi", "-i", "sine=d=3", "-c:a", "aac"]


SMALL = "testsrc2=s=160x120:r=30:d=1"


def lavfi(graph: str) -> list[str]:
    return ["-f", "lavfi", "-i", graph]


# name -> ffmpeg arguments of an MP4 the reader must describe as PyAV does
DESCRIBED = {
    "ntsc_rate_audio_moov_last": [*lavfi("testsrc2=s=320x240:r=30000/1001:d=1.5"), *TONE, *X264],
    "faststart_odd_size": [*lavfi("testsrc2=s=162x90:r=25:d=1.2"), *X264, "-movflags", "faststart"],
    "track_timescale_90k": [*lavfi(SMALL), *X264, "-video_track_timescale", "90000"],
    "audio_longer_than_video": [*lavfi(SMALL), *TONE, *X264],
}
# name -> ffmpeg arguments of a file the reader leaves to PyAV
LEFT = {
    "fragmented": [*lavfi(SMALL), *X264, "-movflags", "frag_keyframe+empty_moov"],
    "mjpeg_in_mp4v": [*lavfi(SMALL), "-c:v", "mjpeg"],
    "audio_only": [*lavfi("sine=d=1"), "-c:a", "aac"],
}  # fmt: skip


def _made(folder, name: str, args: list[str]) -> str:
    path = folder / f"{name}.mp4"
    run_ffmpeg([*args, str(path)])
    return str(path)


@pytest.mark.parametrize("name", sorted(DESCRIBED))
def test_header_says_what_pyav_says(tmp_path, name):
    path = _made(tmp_path, name, DESCRIBED[name])
    header, full = read_header(path), probe_pyav(path).to_dict()
    assert header is not None
    assert header == {k: full[k] for k in header}
    assert header["has_audio"] == ("sine=d=3" in DESCRIBED[name])


def test_header_of_a_generated_clip(tmp_path):
    made = synth.make_clip(tmp_path / "c.mp4", duration=2.0, width=192, height=108, fps=30)
    header = read_header(tmp_path / "c.mp4")
    assert (header["width"], header["height"], header["fps"]) == (192, 108, 30.0)
    assert header["duration"] == pytest.approx(made["duration"], abs=0.05)


@pytest.mark.parametrize("name", sorted(LEFT))
def test_header_leaves_other_files_to_pyav(tmp_path, name):
    assert read_header(_made(tmp_path, name, LEFT[name])) is None


def test_header_of_broken_files_is_none(tmp_path):
    good = _made(tmp_path, "good", DESCRIBED["ntsc_rate_audio_moov_last"])
    data = Path(good).read_bytes()
    cut = tmp_path / "cut.mp4"  # moov at the end, cut off with the end of the body
    cut.write_bytes(data[: len(data) // 2])
    text = tmp_path / "page.mp4"
    text.write_bytes(b"<!DOCTYPE html><html></html>")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (cut, text, empty, tmp_path / "missing.mp4"):
        assert read_header(path) is None, path.name


def test_header_from_the_ends_a_download_kept(tmp_path):
    """A caller holding the file's first and last bytes gets the header from them: the
    file's middle is never read (here it is zeros, and the answer is still right)."""
    path = Path(_made(tmp_path, "moov_last", DESCRIBED["ntsc_rate_audio_moov_last"]))
    fast = Path(_made(tmp_path, "moov_first", DESCRIBED["faststart_odd_size"]))
    for made in (path, fast):
        data, keep = made.read_bytes(), 64 * 1024
        expected = read_header(made)
        first, last = bytearray(data[:keep]), data[-keep:]  # as the writer keeps them
        made.write_bytes(bytes(len(data)))
        assert read_header(made, first, last) == expected
