"""The PyAV fast path of vidal.media.frames returns exactly the frames of a full decode.

It decodes from the keyframe before each target and skips non-reference frames that are not
targets, so its frames must be bit-identical to a plain decode of every frame (converted to RGB
the same way) — on streams with B-frames, B-pyramids and open GOPs, on a cut whose edit list
hides frames, and on containers whose timestamps cannot give display order (AVI), where it
decodes everything instead.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from vidal.media import frames as F
from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.frames import sample_keyframes, uniform_indices

SOURCE = ["-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=3.2"]
X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
CLIPS = {
    # x264's B-pyramid: some B-frames are references, others are not
    "pyramid.mp4": [*X264, "-preset", "medium", "-bf", "3", "-g", "24"],
    # open GOP: B-frames after an I-frame in decode order are shown before it
    "open_gop.mp4": [*X264, "-bf", "3", "-g", "20", "-x264-params", "open-gop=1"],
    "strict_pyramid.mkv": [*X264, "-bf", "5", "-g", "30", "-x264-params", "b-pyramid=strict"],
    "hevc.mp4": ["-c:v", "libx265", "-g", "30", "-x265-params", "bframes=4:log-level=error"],
    "vp9.webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30"],
    "mpeg2.ts": ["-c:v", "mpeg2video", "-bf", "2", "-g", "15"],
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("frames_fast")
    paths = {}
    for name, args in CLIPS.items():
        run_ffmpeg([*SOURCE, *args, str(folder / name)])
        paths[name] = str(folder / name)
    # AVI stores no presentation times: its packets' "pts" follow decode order
    paths["pyramid.avi"] = str(folder / "pyramid.avi")
    run_ffmpeg(["-i", paths["pyramid.mp4"], "-c", "copy", paths["pyramid.avi"]])
    # a cut between keyframes: an edit list hides the frames from the keyframe to the cut,
    # which must be decoded (later frames refer to them) but neither shown nor counted
    paths["cut.mp4"] = str(folder / "cut.mp4")
    run_ffmpeg(["-ss", "1.3", "-i", paths["pyramid.mp4"], "-c", "copy", paths["cut.mp4"]])
    return paths


DERIVED = ["pyramid.avi", "cut.mp4"]


def _reference(path: str):
    """Every frame of a plain single-threaded decode, and which ones are keyframes."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        decoded = list(container.decode(stream))
    return decoded, [i for i, f in enumerate(decoded) if f.key_frame]


@pytest.mark.parametrize("name", [*CLIPS, *DERIVED])
def test_every_frame_as_a_target_matches_a_full_decode(clips, name):
    decoded, _ = _reference(clips[name])
    for n in (len(decoded), 8, 3):
        kf = sample_keyframes(clips[name], n, "exact", backend="pyav")
        assert kf.indices == uniform_indices(len(decoded), n)
        expected = F._to_rgb([decoded[i] for i in kf.indices], None)
        assert np.array_equal(kf.frames, expected), f"{name}, n={n}"


@pytest.mark.parametrize("name", [*CLIPS, *DERIVED])
def test_snap_gives_the_nearest_keyframes_exactly(clips, name):
    decoded, keys = _reference(clips[name])
    kf = sample_keyframes(clips[name], 8, "snap", short_side=64, backend="pyav")
    assert kf.indices == F._nearest(uniform_indices(len(decoded), 8), keys)
    assert np.array_equal(kf.frames, F._to_rgb([decoded[i] for i in kf.indices], 64))


def test_resized_frames_equal_the_resized_reference(clips):
    decoded, _ = _reference(clips["pyramid.mp4"])
    kf = sample_keyframes(clips["pyramid.mp4"], 8, "exact", short_side=96, backend="auto")
    assert kf.backend == "pyav" and kf.frames.shape == (8, 96, 128, 3)
    assert np.array_equal(kf.frames, F._to_rgb([decoded[i] for i in kf.indices], 96))


def test_the_cut_hides_frames(clips):
    with av.open(clips["cut.mp4"]) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert any(p.is_discard for p in packets)
    assert len(_reference(clips["cut.mp4"])[0]) == sum(not p.is_discard for p in packets)


def test_avi_timestamps_are_not_trusted_for_display_order(clips):
    with av.open(clips["pyramid.avi"]) as container:
        stream = container.streams.video[0]
        assert F._demux(container, stream).display is None
    with av.open(clips["pyramid.mp4"]) as container:
        stream = container.streams.video[0]
        assert F._demux(container, stream).display is not None


class _CountingContext:
    """Forwards to a codec context, counting the frames it outputs."""

    def __init__(self, real):
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "frames", 0)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __setattr__(self, name, value):
        setattr(self.real, name, value)

    def decode(self, packet=None):
        out = self.real.decode(packet)
        object.__setattr__(self, "frames", self.frames + len(out))
        return out


def test_exact_skips_what_the_targets_do_not_need(clips, monkeypatch):
    """Fewer frames come out of the decoder than a full decode gives, and snap decodes only
    the distinct keyframes it returns."""
    decoded, _ = _reference(clips["pyramid.mp4"])
    seen, real_pick = [], F._pick_by_pts

    def counting_pick(context, *args):
        seen.append(_CountingContext(context))
        return real_pick(seen[-1], *args)

    monkeypatch.setattr(F, "_pick_by_pts", counting_pick)
    exact = sample_keyframes(clips["pyramid.mp4"], 8, "exact", backend="pyav")
    snap = sample_keyframes(clips["pyramid.mp4"], 8, "snap", backend="pyav")
    assert len(set(exact.indices)) <= seen[0].frames < 0.8 * len(decoded)
    assert seen[1].frames == len(set(snap.indices))
