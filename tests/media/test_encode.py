"""Tests of vidal.media.encode: the training clip is h264 yuv420p, short side 256 with even
sizes, with or without its audio, cut at max_duration, and the same picture as the source."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile

from vidal.media import synth
from vidal.media.encode import EncodeSettings, encode_clip, even_size
from vidal.media.ffmpeg import MediaError


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encode_media")
    paths = {}
    for name, width, height, audio in (
        ("wide", 642, 362, True),  # odd scaled width: 642 * 256 / 362 = 453.97
        ("tall", 362, 642, False),
        ("small", 160, 120, True),
    ):
        paths[name] = folder / f"{name}.mp4"
        synth.make_clip(paths[name], duration=2.0, width=width, height=height, fps=10, audio=audio)
    paths["10bit"] = synth.make_gray_or_10bit(folder / "ten.mp4", "yuv420p10le")
    paths["gray"] = synth.make_gray_or_10bit(folder / "gray.mkv", "gray")
    paths["text"] = synth.make_text_as_mp4(folder / "text.mp4")
    return paths


def _describe(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.format.name,
            "size": (v.codec_context.width, v.codec_context.height),
            "sar": v.sample_aspect_ratio,
            "frames": frames,
            "audio": a.codec_context.name if a else None,
            "audio_channels": a.codec_context.channels if a else None,
            "duration": float(v.duration * v.time_base) if v.duration else None,
            "container": c.format.name,
        }


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


@pytest.mark.parametrize(
    ("size", "short_side"),
    [
        ((642, 362), 256),
        ((362, 642), 256),
        ((1920, 1080), 256),
        ((333, 257), 256),
        ((99, 51), 8),
        ((99, 51), 9),
    ],
)
def test_even_size(size, short_side):
    width, height = size
    new_w, new_h = even_size(width, height, short_side)
    assert new_w % 2 == 0 and new_h % 2 == 0
    assert min(new_w, new_h) == short_side - short_side % 2
    # the long side is the scaled one, off by at most the rounding to even
    ideal = max(width, height) * short_side / min(width, height)
    assert abs(max(new_w, new_h) - ideal) <= 2
    assert (new_w >= new_h) == (width >= height)


@pytest.mark.parametrize("size", [(160, 120), (161, 121), (1, 1), (3, 255)])
def test_even_size_never_upscales_beyond_rounding(size):
    new_w, new_h = even_size(*size, 256)
    assert new_w % 2 == 0 and new_h % 2 == 0
    assert new_w <= max(2, size[0]) and new_h <= max(2, size[1])


@pytest.mark.parametrize(("name", "expected"), [("wide", (454, 256)), ("tall", (256, 454))])
def test_encode_is_h264_yuv420p_short_side_256(media, tmp_path, name, expected):
    dst = tmp_path / "out.mp4"
    src = _describe(media[name])
    encode_clip(media[name], dst, src["size"], EncodeSettings(), has_audio=src["audio"] is not None)
    out = _describe(dst)
    assert "mp4" in out["container"]
    assert out["codec"] == "h264"
    assert out["pix_fmt"] == "yuv420p"
    assert out["size"] == expected
    assert out["size"] == even_size(*src["size"], 256)
    assert out["sar"] in (None, 1)
    assert len(out["frames"]) == len(src["frames"])
    # the same pictures: first, middle and last frame, resized, are close to the output's
    for k in (0, len(src["frames"]) // 2, len(src["frames"]) - 1):
        want = _resized(src["frames"][k], out["size"]).astype(int)
        assert np.abs(out["frames"][k].astype(int) - want).mean() < 4.0, k


def test_small_clip_is_not_upscaled(media, tmp_path):
    dst = tmp_path / "out.mp4"
    encode_clip(media["small"], dst, (160, 120), EncodeSettings(), has_audio=True)
    assert _describe(dst)["size"] == (160, 120)


@pytest.mark.parametrize("short_side", [64, 100])
def test_other_short_side(media, tmp_path, short_side):
    dst = tmp_path / "out.mp4"
    encode_clip(media["small"], dst, (160, 120), EncodeSettings(short_side=short_side))
    width, height = _describe(dst)["size"]
    assert height == short_side and width % 2 == 0
    assert width == pytest.approx(160 * short_side / 120, abs=2)


@pytest.mark.parametrize("name", ["10bit", "gray"])
def test_unusual_pixel_formats_become_yuv420p(media, tmp_path, name):
    dst = tmp_path / "out.mp4"
    encode_clip(media[name], dst, (160, 120), EncodeSettings(short_side=64))
    out = _describe(dst)
    assert (out["codec"], out["pix_fmt"], out["size"]) == ("h264", "yuv420p", (84, 64))
    assert len(out["frames"]) == 10


def test_audio_kept(media, tmp_path):
    dst = tmp_path / "out.mp4"
    encode_clip(media["wide"], dst, (642, 362), EncodeSettings(), has_audio=True)
    out = _describe(dst)
    assert out["audio"] == "aac"
    assert out["audio_channels"] == 1


def test_audio_dropped_when_keep_audio_is_false(media, tmp_path):
    dst = tmp_path / "out.mp4"
    encode_clip(media["wide"], dst, (642, 362), EncodeSettings(keep_audio=False), has_audio=True)
    assert _describe(dst)["audio"] is None


def test_source_without_audio(media, tmp_path):
    dst, flac = tmp_path / "out.mp4", tmp_path / "out.flac"
    encode_clip(media["tall"], dst, (362, 642), EncodeSettings(), has_audio=False, audio_dst=flac)
    assert _describe(dst)["audio"] is None
    assert not flac.exists()


@pytest.mark.parametrize("max_duration", [0.5, 1.2])
def test_max_duration_is_honoured(media, tmp_path, max_duration):
    dst = tmp_path / "out.mp4"
    settings = EncodeSettings(max_duration=max_duration)
    encode_clip(media["small"], dst, (160, 120), settings, has_audio=True)
    out = _describe(dst)
    assert len(out["frames"]) == pytest.approx(max_duration * 10, abs=1)  # 10 fps source
    assert out["duration"] <= max_duration + 0.1 + 1e-6


def test_one_pass_clip_and_audio(media, tmp_path):
    dst, flac = tmp_path / "out.mp4", tmp_path / "out.flac"
    encode_clip(
        media["wide"],
        dst,
        (642, 362),
        EncodeSettings(max_duration=1.5),
        has_audio=True,
        audio_dst=flac,
    )
    out = _describe(dst)
    assert (out["codec"], out["pix_fmt"], out["size"]) == ("h264", "yuv420p", (454, 256))
    assert len(out["frames"]) == pytest.approx(15, abs=1)
    info = soundfile.info(str(flac))
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    samples, _ = soundfile.read(str(flac))
    assert np.sqrt(np.mean(samples**2)) > 0.05  # the tone, not silence


def test_one_pass_audio_at_another_rate(media, tmp_path):
    flac = tmp_path / "out.flac"
    encode_clip(
        media["small"],
        tmp_path / "out.mp4",
        (160, 120),
        has_audio=True,
        audio_dst=flac,
        audio_rate=8000,
    )
    info = soundfile.info(str(flac))
    assert (info.samplerate, info.channels) == (8000, 1)
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_not_a_video_raises(media, tmp_path):
    dst = tmp_path / "out.mp4"
    with pytest.raises(MediaError) as info:
        encode_clip(media["text"], dst, (160, 120))
    # refused before ffmpeg runs: the bytes are no media container (vidal.media.container)
    assert info.value.reason == "not_media"
    assert info.value.detail
