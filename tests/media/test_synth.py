"""Tests of vidal.media.synth: every generator is checked by opening its output with PyAV."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from vidal.media import synth
from vidal.media.ffmpeg import MediaError

# --- helpers -------------------------------------------------------------------------------


def _rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _first_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def _keyframe_times(path: Path) -> list[float]:
    """Presentation times (s, from the first frame) of the video's keyframe packets."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(video=0) if p.size > 0]
    first = min(p.pts for p in packets)
    tb = packets[0].time_base
    return sorted(float((p.pts - first) * tb) for p in packets if p.is_keyframe)


def _shape_mask(frame: np.ndarray, background=(0, 0, 0)) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(background)).sum(-1) > 150


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "shape not found in frame"
    return float(xs.mean()), float(ys.mean())


def _fill_ratio(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    return float(mask.sum() / box)


# --- make_clip -----------------------------------------------------------------------------


def test_make_clip_red_circle_left_to_right(tmp_path):
    path = tmp_path / "clip.mp4"
    meta = synth.make_clip(path)  # defaults: 3 s, 320x240, 25 fps, red circle, left to right

    assert meta["title"] == "a red circle moving from left to right"
    assert meta["hashtags"][:2] == ["#red", "#circle"]
    assert (meta["shape"], meta["colour"], meta["motion"]) == ("circle", "red", "left_to_right")
    assert (meta["width"], meta["height"], meta["fps"], meta["has_audio"]) == (320, 240, 25, True)

    with av.open(str(path)) as c:
        assert c.format.name.startswith("mov,mp4")
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.codec_context.format.name) == ("h264", "yuv420p")
        assert (v.codec_context.width, v.codec_context.height) == (320, 240)
        assert v.average_rate == 25
        assert a.codec_context.name == "aac"
        assert a.codec_context.sample_rate == 44100
        assert a.codec_context.channels == 1
        assert abs(float(a.duration * a.time_base) - 3.0) < 0.1
    frames = _rgb_frames(path)
    assert len(frames) == 75
    assert _keyframe_times(path) == [0.0, 2.0]

    first, last = _shape_mask(frames[0]), _shape_mask(frames[-1])
    (x0, y0), (x1, y1) = _centroid(first), _centroid(last)
    assert x0 < 320 / 3 and x1 > 2 * 320 / 3
    assert abs(y0 - 120) < 5 and abs(y1 - 120) < 5
    for frame, (x, y) in ((frames[0], (x0, y0)), (frames[-1], (x1, y1))):
        r, g, b = frame[round(y), round(x)].astype(int)
        assert r > 200 and g < 60 and b < 60
    assert 0.70 < _fill_ratio(first) < 0.87  # pi/4 for a disc in its bounding box


@pytest.mark.parametrize(
    ("motion", "title", "dx", "dy"),
    [
        ("right_to_left", "a blue square moving from right to left", -1, 0),
        ("top_to_bottom", "a blue square moving from top to bottom", 0, 1),
        ("bottom_to_top", "a blue square moving from bottom to top", 0, -1),
        ("static", "a static blue square", 0, 0),
    ],
)
def test_make_clip_motions(tmp_path, motion, title, dx, dy):
    path = tmp_path / "m.mp4"
    meta = synth.make_clip(
        path,
        duration=1.0,
        width=160,
        height=120,
        fps=10,
        shape="square",
        colour="blue",
        motion=motion,
        audio=False,
    )
    assert meta["title"] == title
    frames = _rgb_frames(path)
    assert len(frames) == 10
    (x0, y0), (x1, y1) = _centroid(_shape_mask(frames[0])), _centroid(_shape_mask(frames[-1]))
    # The shape crosses the free room (90 px wide, 60 px tall here) in the clip's duration.
    for delta, sign, room in ((x1 - x0, dx, 160 - 30), (y1 - y0, dy, 120 - 30)):
        if sign == 0:
            assert abs(delta) < 2
        else:
            assert sign * delta > 0.8 * room


@pytest.mark.parametrize(
    ("shape", "lo", "hi"),
    [
        ("circle", 0.70, 0.87),
        ("square", 0.95, 1.01),
        ("triangle", 0.40, 0.60),
    ],
)
def test_make_clip_shapes(tmp_path, shape, lo, hi):
    path = tmp_path / "s.mp4"
    synth.make_clip(path, duration=0.2, fps=10, shape=shape, motion="static", audio=False)
    mask = _shape_mask(_first_rgb(path))
    assert lo < _fill_ratio(mask) < hi
    rows = mask.sum(axis=1)[mask.any(axis=1)]  # shape width, row by row, top to bottom
    if shape == "triangle":  # apex at the top
        assert rows[0] < 0.2 * rows[-1]
    else:
        assert abs(int(rows[0]) - int(rows[-1])) <= 0.2 * rows.max()


@pytest.mark.parametrize("colour", sorted(synth.COLOURS))
def test_make_clip_colours(tmp_path, colour):
    path = tmp_path / "c.mp4"
    meta = synth.make_clip(
        path,
        duration=0.2,
        width=64,
        height=64,
        fps=10,
        shape="square",
        colour=colour,
        motion="static",
        audio=False,
    )
    assert meta["title"] == f"a static {colour} square"
    assert f"#{colour}" in meta["hashtags"]
    frame = _first_rgb(path)
    # The 16x16 square sits in the middle; its inner 8x8 pixels are free of chroma bleeding.
    inner = frame[28:36, 28:36].reshape(-1, 3).astype(int)
    assert np.abs(np.median(inner, axis=0) - synth.COLOURS[colour]).max() < 30
    assert frame[0, 0].max() < 30  # black background


def test_make_clip_video_only_background_and_keyint(tmp_path):
    path = tmp_path / "v.mp4"
    meta = synth.make_clip(
        path,
        duration=3.5,
        width=96,
        height=64,
        fps=10,
        keyint_s=1.0,
        audio=False,
        background="white",
        colour="blue",
    )
    assert meta["has_audio"] is False
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 0
        assert len(c.streams.video) == 1
    frames = _rgb_frames(path)
    assert len(frames) == 35
    assert frames[0][0, 0].min() > 225  # white background
    assert _keyframe_times(path) == [0.0, 1.0, 2.0, 3.0]


def test_make_clip_is_atomic(tmp_path):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(MediaError):
        synth.make_clip(path, duration=0.2, codec="no_such_codec", audio=False)
    assert path.read_bytes() == b"previous"  # untouched by the failed run
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temp file left behind
    synth.make_clip(path, duration=0.2, audio=False)
    assert path.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_make_clip_rejects_unknown_values(tmp_path):
    for bad in ({"shape": "hexagon"}, {"colour": "plaid"}, {"motion": "sideways"}):
        with pytest.raises(ValueError):
            synth.make_clip(tmp_path / "x.mp4", **bad)
    assert list(tmp_path.iterdir()) == []


# --- caption_grid / make_clip_set ----------------------------------------------------------


def test_caption_grid_distinct_balanced_deterministic():
    total = len(synth.SHAPES) * len(synth.COLOURS) * len(synth.MOTIONS)
    full = [(d["shape"], d["colour"], d["motion"]) for d in synth.caption_grid(total)]
    assert len(full) == len(set(full)) == total == 120
    for seed in range(4):
        grid = synth.caption_grid(total, seed)
        for n in range(1, total + 1):
            for key, values in (
                ("shape", synth.SHAPES),
                ("colour", synth.COLOURS),
                ("motion", synth.MOTIONS),
            ):
                counts = Counter(d[key] for d in grid[:n])
                per_value = [counts.get(v, 0) for v in values]
                assert max(per_value) - min(per_value) <= 1, (seed, n, key, counts)
    grid = synth.caption_grid(30, seed=7)
    assert grid == synth.caption_grid(30, seed=7)
    assert grid != synth.caption_grid(30, seed=8)
    assert len({d["title"] for d in grid}) == 30
    for d in grid:
        assert d["title"] == synth.caption(d["shape"], d["colour"], d["motion"])
    with pytest.raises(ValueError):
        synth.caption_grid(total + 1)


def test_make_clip_set(tmp_path):
    folder = tmp_path / "set"
    paths = synth.make_clip_set(folder, 4, seed=3, duration=(0.5, 1.0), size=(96, 64), fps=10)
    assert [p.name for p in paths] == [f"synth-{i:03d}.mp4" for i in range(4)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"synth-{i:03d}.{ext}" for i in range(4) for ext in ("mp4", "json")]
    )
    grid = synth.caption_grid(4, seed=3)
    for i, (path, combo) in enumerate(zip(paths, grid, strict=True)):
        side = json.loads(path.with_suffix(".json").read_text())
        assert set(side) == {"title", "hashtags", "shape", "colour", "motion"}
        assert side["title"] == combo["title"]
        assert side["title"] == synth.caption(side["shape"], side["colour"], side["motion"])
        assert f"#{side['colour']}" in side["hashtags"]
        with av.open(str(path)) as c:
            assert len(c.streams.audio) == (1 if i % 2 == 0 else 0)
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == (96, 64)
            assert 0.45 <= c.duration / 1e6 <= 1.1
    assert len({json.loads(p.with_suffix(".json").read_text())["title"] for p in paths}) == 4


# --- bad-input fixtures --------------------------------------------------------------------


@pytest.mark.parametrize("make", [synth.make_empty_file, synth.make_text_as_mp4])
def test_not_a_video_fails_to_open(tmp_path, make):
    path = make(tmp_path / "bad.mp4")
    assert path == tmp_path / "bad.mp4" and path.exists()
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path))


def test_make_empty_file_is_empty(tmp_path):
    assert synth.make_empty_file(tmp_path / "e.mp4").stat().st_size == 0


@pytest.fixture(scope="module")
def real_mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "src.mp4"
    synth.make_clip(path, duration=2.0, width=160, height=120, fps=25)
    return path


def test_truncated_without_header_fails_to_open(tmp_path, real_mp4):
    path = synth.make_truncated_mp4(tmp_path / "t.mp4", real_mp4)
    assert 0.3 * real_mp4.stat().st_size < path.stat().st_size < 0.45 * real_mp4.stat().st_size
    assert b"moov" not in path.read_bytes()
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path))


def test_truncated_with_header_opens_but_ends_early(tmp_path, real_mp4):
    path = synth.make_truncated_mp4(tmp_path / "t.mp4", real_mp4, keep_header=True)
    assert b"moov" in path.read_bytes()[:200]
    decoded = 0
    with av.open(str(path)) as c:
        promised = c.streams.video[0].frames
        try:
            for _ in c.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass
    assert promised == 50
    assert decoded < promised


@pytest.mark.parametrize("name", ["a.mp4", "a.m4a"])
def test_make_audio_only(tmp_path, name):
    path = synth.make_audio_only(tmp_path / name, duration=2.0)
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 0
        assert [s.codec_context.name for s in c.streams.audio] == ["aac"]
        assert abs(c.duration / 1e6 - 2.0) < 0.1


def test_make_tiny_video(tmp_path):
    path = synth.make_tiny_video(tmp_path / "tiny.mp4")
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (1, 1)
    frames = _rgb_frames(path)
    assert len(frames) >= 1 and frames[0].shape == (1, 1, 3)


def test_make_huge_video(tmp_path):
    path = synth.make_huge_video(tmp_path / "huge.mp4")
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (8000, 8000)
        assert 1 <= v.frames <= 2
    assert path.stat().st_size < 5_000_000


def test_make_long_clip(tmp_path):
    path = synth.make_long_clip(tmp_path / "long.mp4")
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert c.duration / 1e6 > 29.5
        assert (v.codec_context.width, v.codec_context.height) == (160, 120)
        assert v.average_rate == 5
        assert v.frames == 150


@pytest.mark.parametrize(("pix_fmt", "codec"), [("gray", "ffv1"), ("yuv420p10le", "h264")])
def test_make_gray_or_10bit(tmp_path, pix_fmt, codec):
    path = synth.make_gray_or_10bit(tmp_path / f"{pix_fmt}.mp4", pix_fmt=pix_fmt)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == codec
        frames = list(c.decode(video=0))
    assert len(frames) == 10
    assert {f.format.name for f in frames} == {pix_fmt}
    assert frames[0].to_ndarray(format="rgb24").shape == (120, 160, 3)


def test_make_one_frame_video(tmp_path):
    path = synth.make_one_frame_video(tmp_path / "one.mp4")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 1
    assert len(_rgb_frames(path)) == 1


# --- benchmark clips -----------------------------------------------------------------------


def test_make_bench_clip(tmp_path):
    a = synth.make_bench_clip(tmp_path / "a.mp4", 2.5, seed=1)
    b = synth.make_bench_clip(tmp_path / "b.mp4", 2.5, seed=2)
    with av.open(str(a)) as c:
        v, au = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == (
            "h264",
            1280,
            720,
        )
        assert v.average_rate == 30
        assert v.frames == 75
        assert au.codec_context.name == "aac"
    assert _keyframe_times(a) == [0.0, 2.0]
    assert a.stat().st_size * 8 / 2.5 > 1_000_000  # not trivially compressible: > 1 Mbit/s
    fa, fb = _first_rgb(a), _first_rgb(b)
    assert np.abs(fa.astype(int) - fb).mean() > 10  # seeds give different content
