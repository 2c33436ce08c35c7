"""Tests of vidal.media.probe: what a generated file holds, checked against how it was made
(and, where the generator does not say, against PyAV's own reading of the file)."""

from __future__ import annotations

import json
import os

import av
import pytest

from vidal.media import synth
from vidal.media.ffmpeg import MediaError
from vidal.media.probe import probe


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe_clips")
    made = {
        "audio": synth.make_clip(
            folder / "audio.mp4", duration=2.0, width=320, height=240, fps=25, audio=True
        ),
        "silent": synth.make_clip(
            folder / "silent.mp4", duration=1.6, width=192, height=108, fps=30, audio=False
        ),
        "portrait": synth.make_clip(
            folder / "portrait.mp4", duration=1.0, width=120, height=160, fps=24, audio=False
        ),
    }
    paths = {name: folder / f"{name}.mp4" for name in made}
    paths["10bit"] = synth.make_gray_or_10bit(folder / "ten.mp4", "yuv420p10le")
    paths["gray"] = synth.make_gray_or_10bit(folder / "gray.mkv", "gray")
    paths["one_frame"] = synth.make_one_frame_video(folder / "one.mp4")
    return made, paths


def _frames_decoded(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("name", ["audio", "silent", "portrait"])
def test_probe_matches_generated_clip(clips, name):
    made, paths = clips
    meta, path = made[name], paths[name]
    info = probe(path)

    assert (info.width, info.height) == (meta["width"], meta["height"])
    assert info.fps == pytest.approx(meta["fps"])
    assert info.duration == pytest.approx(meta["duration"], abs=1.0 / meta["fps"] + 1e-3)
    assert info.num_frames == _frames_decoded(path)
    assert info.num_frames == round(meta["duration"] * meta["fps"])
    assert info.video_codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert "mp4" in info.container
    assert info.size_bytes == os.path.getsize(path)
    assert info.has_audio is meta["has_audio"]


def test_probe_audio_stream_details(clips):
    made, paths = clips
    info = probe(paths["audio"])
    assert info.has_audio is True
    assert info.audio_codec == "aac"
    assert info.audio_sample_rate == 44100  # make_clip's tone
    assert info.audio_channels == 1


def test_probe_without_audio_has_no_audio_details(clips):
    _, paths = clips
    info = probe(paths["silent"])
    assert info.has_audio is False
    assert info.audio_codec is None
    assert info.audio_sample_rate is None
    assert info.audio_channels is None


@pytest.mark.parametrize(
    ("name", "pix_fmt", "codec", "container"),
    [("10bit", "yuv420p10le", "h264", "mp4"), ("gray", "gray", "ffv1", "matroska")],
)
def test_probe_unusual_pixel_formats(clips, name, pix_fmt, codec, container):
    _, paths = clips
    info = probe(paths[name])
    # make_gray_or_10bit: 1 s of testsrc2 at 160x120, 10 fps
    assert info.pix_fmt == pix_fmt
    assert info.video_codec == codec
    assert container in info.container
    assert (info.width, info.height) == (160, 120)
    assert info.fps == pytest.approx(10)
    assert info.duration == pytest.approx(1.0, abs=0.11)
    assert info.num_frames == _frames_decoded(paths[name]) == 10
    assert info.has_audio is False


def test_probe_one_frame_video(clips):
    _, paths = clips
    info = probe(paths["one_frame"])
    assert info.num_frames == 1
    assert (info.width, info.height) == (64, 48)
    assert 0 < info.duration <= 0.1


def test_probe_result_is_plain_json(clips):
    _, paths = clips
    info = probe(paths["audio"])
    data = json.loads(json.dumps(info.to_dict()))
    assert data["width"] == info.width
    assert data["has_audio"] is True
    assert set(data) >= {"duration", "fps", "width", "height", "num_frames", "has_audio"}


@pytest.mark.parametrize(
    ("make", "reasons"),
    [
        (synth.make_empty_file, {"empty_file"}),
        (synth.make_text_as_mp4, {"not_media"}),
        (synth.make_audio_only, {"no_video_stream"}),
    ],
    ids=["empty", "text", "audio_only"],
)
def test_probe_bad_files_raise_media_error(tmp_path, make, reasons):
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(MediaError) as info:
        probe(path)
    assert info.value.reason in reasons
    assert str(info.value).startswith(f"{info.value.reason}: ")
    assert info.value.detail


def test_probe_truncated_without_header_raises(clips, tmp_path):
    _, paths = clips
    path = synth.make_truncated_mp4(tmp_path / "cut.mp4", paths["audio"])
    with pytest.raises(MediaError) as info:
        probe(path)
    assert info.value.reason in {"not_media", "corrupt"}


def test_probe_missing_file(tmp_path):
    with pytest.raises(MediaError) as info:
        probe(tmp_path / "nope.mp4")
    assert info.value.reason == "missing_file"
