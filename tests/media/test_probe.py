"""Tests of vidal.media.probe: what a generated file holds, checked against how it was made
(and, where the generator does not say, against PyAV's own reading of the file); an MP4 read
from its header gives what PyAV gives."""

from __future__ import annotations

import json
import os

import av
import pytest

from vidal.media import synth
from vidal.media.ffmpeg import MediaError, run_ffmpeg
from vidal.media.mp4_header import read_header
from vidal.media.probe import ProbeResult, probe, probe_pyav


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


# MP4s read from their header: name -> ffmpeg arguments (after -f lavfi -i testsrc2)
X264 = ["-c:v", "libx264", "-preset", "ultrafast"]
READ_FROM_HEADER = {
    "aac_stereo_48k": ["-f", "lavfi", "-i", "sine=d=1", *X264, "-ac", "2", "-ar", "48000"],
    "cropped_odd_size_faststart": ["-vf", "scale=162:90", *X264, "-movflags", "faststart"],
    "limited_range_signalled": [*X264, "-color_range", "tv", "-movflags", "+write_colr"],
    "high_profile_odd_sar": ["-c:v", "libx264", "-profile:v", "high", "-vf", "setsar=33/20"],
}
# MP4s whose pix_fmt or audio a header cannot settle: PyAV reads them
LEFT_TO_PYAV = {
    "full_range": [*X264, "-pix_fmt", "yuvj420p"],
    "full_range_odd_sar": [*X264, "-pix_fmt", "yuvj420p", "-vf", "setsar=33/20"],
    "yuv444p": [*X264, "-pix_fmt", "yuv444p"],
    "aac_22050_may_hold_sbr": ["-f", "lavfi", "-i", "sine=d=1", *X264, "-ar", "22050"],
    "ac3_audio": ["-f", "lavfi", "-i", "sine=d=1", *X264, "-c:a", "ac3"],
    "hevc": ["-c:v", "libx265", "-x265-params", "log-level=none", "-tag:v", "hvc1"],
}


def _mp4(folder, name: str, args: list[str]):
    path = folder / f"{name}.mp4"
    src = ["-f", "lavfi", "-i", "testsrc2=s=176x144:r=25:d=1"]
    run_ffmpeg([*src, *args, "-shortest", str(path)])
    return path


@pytest.mark.parametrize("name", sorted(READ_FROM_HEADER))
def test_header_probe_equals_pyav(tmp_path, name):
    path = _mp4(tmp_path, name, READ_FROM_HEADER[name])
    header = read_header(path)
    assert header is not None and set(ProbeResult.__dataclass_fields__) <= set(header)
    assert probe(path) == probe_pyav(path)


@pytest.mark.parametrize("name", sorted(LEFT_TO_PYAV))
def test_what_the_header_cannot_settle_goes_to_pyav(tmp_path, name):
    path = _mp4(tmp_path, name, LEFT_TO_PYAV[name])
    header = read_header(path) or {}
    assert not set(ProbeResult.__dataclass_fields__) <= set(header)
    assert probe(path) == probe_pyav(path)


def test_a_sample_entry_lying_about_size_does_not_decide(clips, tmp_path):
    """The limits (min_side, max_side) go by what the decoder will make: an avc1 entry whose
    width disagrees with its SPS is not believed."""
    _, paths = clips
    data = bytearray(paths["audio"].read_bytes())  # 320x240
    width_at = data.index(b"avc1", data.index(b"stsd")) + 28
    assert int.from_bytes(data[width_at : width_at + 2], "big") == 320
    data[width_at : width_at + 2] = (4000).to_bytes(2, "big")
    liar = tmp_path / "liar.mp4"
    liar.write_bytes(bytes(data))
    assert read_header(liar) is None
    assert (probe(liar).width, probe(liar).height) == (320, 240)
