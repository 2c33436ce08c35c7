"""Tests of vidal.media.frames: which frames are sampled, and that they are those frames.

The ground truth is a plain PyAV decode of every frame; the moving-shape clips also carry their
frame number in the picture (the shape's x position is a known function of time).
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidal.media import synth
from vidal.media.ffmpeg import MediaError, run_ffmpeg
from vidal.media.frames import sample_keyframes, scaled_size, uniform_indices

BACKENDS = ("decord", "pyav")

# The moving clip: a red circle from left to right over black, 10 fps (a frame rate whose
# timestamps are not exact binary fractions), 3 s, 320x240, a keyframe every 2 s.
MOVING = {"duration": 3.0, "width": 320, "height": 240, "fps": 10}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames_media")
    paths = {}
    synth.make_clip(folder / "moving.mp4", **MOVING, audio=False)
    paths["moving"] = folder / "moving.mp4"
    # 25 fps with a keyframe every 0.5 s (every 12 frames) and B-frames (preset veryfast)
    synth.make_clip(
        folder / "gop.mp4",
        duration=2.0,
        width=160,
        height=120,
        fps=25,
        keyint_s=0.5,
        preset="veryfast",
        motion="top_to_bottom",
        audio=False,
    )
    paths["gop"] = folder / "gop.mp4"
    paths["10bit"] = synth.make_gray_or_10bit(folder / "ten.mp4", "yuv420p10le")
    paths["gray"] = synth.make_gray_or_10bit(folder / "gray.mkv", "gray")
    paths["one_frame"] = synth.make_one_frame_video(folder / "one.mp4")
    # the moving clip remuxed to MPEG-TS: its timestamps start at 1.4 s, not 0
    paths["mpegts"] = folder / "moving.ts"
    run_ffmpeg(["-i", str(paths["moving"]), "-c", "copy", "-f", "mpegts", str(paths["mpegts"])])
    paths["text"] = synth.make_text_as_mp4(folder / "text.mp4")
    return paths


def _all_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _keyframe_positions(path) -> set[int]:
    """Display-order positions of the keyframes, from PyAV's packet flags."""
    with av.open(str(path)) as c:
        packets = sorted((p for p in c.demux(video=0) if p.size > 0), key=lambda p: p.pts)
    return {i for i, p in enumerate(packets) if p.is_keyframe}


def _shape_frame_number(frame: np.ndarray) -> float:
    """The frame number the moving clip's red circle position says this frame is."""
    height, width = frame.shape[:2]
    red = (frame[..., 0] > 128) & (frame[..., 1] < 100) & (frame[..., 2] < 100)
    xs = np.nonzero(red)[1]
    assert xs.size > 0, "the shape is not in the frame"
    # make_clip: shape side = min(W, H) // 4 // 2 * 2, x = (W - side) * t / span
    side = min(MOVING["width"], MOVING["height"]) // 4 // 2 * 2 * width / MOVING["width"]
    span = MOVING["duration"] - 1 / MOVING["fps"]
    left = xs.mean() - (side - 1) / 2
    return left / (width - side) * span * MOVING["fps"]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_is_frame(frame: np.ndarray, truth: list[np.ndarray], index: int, what: str) -> None:
    """`frame` is source frame `index`: close to it, and closer to it than to any other frame
    (decoders convert colours a little differently, so equality is too strict)."""
    distances = [_mad(frame, other) for other in truth]
    assert distances[index] < 6.0, f"{what}: far from frame #{index} ({distances[index]:.1f})"
    best = int(np.argmin(distances))
    assert distances[best] == distances[index], f"{what}: looks like #{best}, not #{index}"


# --- indices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [1, 2, 7, 8, 9, 10, 29, 50, 61, 1000, 12345])
@pytest.mark.parametrize("n", [1, 8, 16])
def test_uniform_indices_are_languagebinds(total, n):
    got = uniform_indices(total, n)
    assert got == np.linspace(0, total - 1, n, dtype=int).tolist()
    assert len(got) == n and all(isinstance(i, int) for i in got)
    assert got[0] == 0 and 0 <= got[-1] <= total - 1
    assert got == sorted(got)


@pytest.mark.parametrize("total", [0, -3])
def test_uniform_indices_of_no_frames_is_a_media_error(total):
    with pytest.raises(MediaError) as info:
        uniform_indices(total, 8)
    assert info.value.reason == "no_frames"


@pytest.mark.parametrize(
    ("size", "short_side"),
    [((320, 240), 64), ((240, 320), 64), ((1920, 1080), 256), ((641, 359), 256), ((5, 3), 2)],
)
def test_scaled_size_sets_the_short_side(size, short_side):
    width, height = size
    new_w, new_h = scaled_size(width, height, short_side)
    assert min(new_w, new_h) == short_side
    assert (new_w >= new_h) == (width >= height)
    assert new_w / new_h == pytest.approx(width / height, abs=1.0 / min(new_w, new_h))


@pytest.mark.parametrize("short_side", [None, 0, 240, 241, 1000])
def test_scaled_size_never_upscales(short_side):
    assert scaled_size(320, 240, short_side) == (320, 240)


# --- exact sampling --------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["moving", "gop", "10bit", "gray", "mpegts"])
def test_backends_agree_and_match_a_full_decode(media, clip):
    truth = _all_frames(media[clip])
    expected = uniform_indices(len(truth), 8)
    got = {be: sample_keyframes(media[clip], 8, "exact", backend=be) for be in BACKENDS}
    for backend, kf in got.items():
        assert kf.backend == backend
        assert kf.indices == expected, backend
        assert kf.frames.shape == (8, *truth[0].shape)
        assert kf.frames.dtype == np.uint8
        for k, index in enumerate(kf.indices):
            _assert_is_frame(kf.frames[k], truth, index, f"{backend} frame {k}")
    assert _mad(got["decord"].frames, got["pyav"].frames) < 6.0
    assert got["decord"].timestamps == pytest.approx(got["pyav"].timestamps, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_content_matches_its_index(media, backend):
    kf = sample_keyframes(media["moving"], 8, "exact", backend=backend)
    total = round(MOVING["duration"] * MOVING["fps"])
    assert kf.indices == np.linspace(0, total - 1, 8, dtype=int).tolist()
    for k, index in enumerate(kf.indices):
        assert _shape_frame_number(kf.frames[k]) == pytest.approx(index, abs=0.5), k
        assert kf.timestamps[k] == pytest.approx(index / MOVING["fps"], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_content_survives_resizing(media, backend):
    kf = sample_keyframes(media["moving"], 8, "exact", short_side=120, backend=backend)
    assert kf.frames.shape == (8, 120, 160, 3)
    for k, index in enumerate(kf.indices):
        assert _shape_frame_number(kf.frames[k]) == pytest.approx(index, abs=0.6), k


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("short_side", "shape"), [(64, (64, 85)), (96, (96, 128))])
def test_short_side_resize(media, backend, short_side, shape):
    kf = sample_keyframes(media["moving"], 8, "exact", short_side=short_side, backend=backend)
    assert kf.frames.shape == (8, *shape, 3)
    assert min(kf.frames.shape[1:3]) == short_side


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("short_side", [240, 480, 1000])
def test_short_side_never_upscales(media, backend, short_side):
    kf = sample_keyframes(media["moving"], 8, "exact", short_side=short_side, backend=backend)
    assert kf.frames.shape == (8, 240, 320, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["exact", "snap"])
def test_one_frame_video_gives_n_copies_of_frame_zero(media, backend, mode):
    (truth,) = _all_frames(media["one_frame"])
    kf = sample_keyframes(media["one_frame"], 8, mode, backend=backend)
    assert kf.indices == [0] * 8
    assert kf.frames.shape == (8, *truth.shape)
    for frame in kf.frames:
        assert _mad(frame, truth) < 2.0


@pytest.mark.parametrize("n", [1, 4, 16])
def test_other_frame_counts(media, n):
    kf = sample_keyframes(media["gop"], n, "exact")
    assert len(kf) == n == kf.frames.shape[0] == len(kf.timestamps)
    assert kf.indices == np.linspace(0, 49, n, dtype=int).tolist()


# --- snap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_snap_returns_only_keyframes(media, backend):
    keys = _keyframe_positions(media["gop"])
    assert keys == {0, 12, 24, 36, 48}  # the fixture's GOP, so the check below means something
    truth = _all_frames(media["gop"])
    kf = sample_keyframes(media["gop"], 8, "snap", backend=backend)
    assert len(kf) == 8 and kf.frames.shape == (8, *truth[0].shape)
    assert set(kf.indices) <= keys
    assert kf.indices == sorted(kf.indices)
    assert len(set(kf.indices)) > 1
    for k, index in enumerate(kf.indices):
        _assert_is_frame(kf.frames[k], truth, index, f"frame {k}")
        assert kf.timestamps[k] == pytest.approx(index / 25, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_snap_picks_the_nearest_keyframe(media, backend):
    """The documented choice: for each uniform index, the nearest keyframe (either side)."""
    keys = np.array(sorted(_keyframe_positions(media["gop"])))
    wanted = uniform_indices(50, 8)
    kf = sample_keyframes(media["gop"], 8, "snap", backend=backend)
    for target, got in zip(wanted, kf.indices, strict=True):
        assert abs(got - target) == np.abs(keys - target).min(), (target, got, kf.indices)


class _Proxy:
    """Forwards everything to the wrapped PyAV object."""

    def __init__(self, real, counter: list[int]):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_counter", counter)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)

    def _count(self, frames):
        for frame in frames:
            self._counter[0] += 1
            yield frame


class _CountingContext(_Proxy):
    def decode(self, *args, **kwargs):
        return list(self._count(self._real.decode(*args, **kwargs)))


class _CountingStream(_Proxy):
    @property
    def codec_context(self):
        return _CountingContext(self._real.codec_context, self._counter)


class _CountingStreams(_Proxy):
    @property
    def video(self):
        return tuple(_CountingStream(s, self._counter) for s in self._real.video)


def _unwrap(args):
    return [a._real if isinstance(a, _Proxy) else a for a in args]


class _CountingContainer(_Proxy):
    """A PyAV container that counts every frame decoded through it or its codec contexts."""

    @property
    def streams(self):
        return _CountingStreams(self._real.streams, self._counter)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def demux(self, *args, **kwargs):
        return self._real.demux(*_unwrap(args), **kwargs)

    def seek(self, *args, stream=None, **kwargs):
        return self._real.seek(*args, stream=_unwrap([stream])[0], **kwargs)

    def decode(self, *args, **kwargs):
        return self._count(self._real.decode(*_unwrap(args), **kwargs))


def test_snap_decodes_fewer_frames_than_exact(media, monkeypatch):
    """Frames decoded by the PyAV backend, counted by wrapping av.open (not by timing)."""
    real_open = av.open
    counts, results = {}, {}
    for mode in ("exact", "snap"):
        counter = [0]
        monkeypatch.setattr(
            av, "open", lambda *a, _c=counter, **k: _CountingContainer(real_open(*a, **k), _c)
        )
        results[mode] = sample_keyframes(media["gop"], 8, mode, backend="pyav")
        counts[mode] = counter[0]
    monkeypatch.setattr(av, "open", real_open)
    if counts["exact"] == 0:
        pytest.skip("this PyAV backend decodes in a way the wrapper cannot observe")
    # at most one decoded frame per returned frame, and at least one per distinct keyframe
    assert len(set(results["snap"].indices)) <= counts["snap"] <= len(results["snap"])
    assert counts["exact"] > counts["snap"]
    # exact has to decode its targets and (at least) the keyframes they depend on
    assert counts["exact"] >= len(set(results["exact"].indices))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_not_a_video_is_a_media_error(media, backend):
    with pytest.raises(MediaError) as info:
        sample_keyframes(media["text"], 8, "exact", backend=backend)
    assert info.value.reason
    assert info.value.detail


def test_unknown_mode_is_refused(media):
    with pytest.raises(ValueError, match="mode"):
        sample_keyframes(media["moving"], 8, "every")
