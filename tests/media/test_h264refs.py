"""Exact keyframes on x264's long GOPs, where vidal.media.h264refs lets the decoder skip the
reference B-frames the wanted frames do not need.

Every frame returned must be bit-identical to the frame at its index in a plain full decode:
with x264's defaults (keyint 250, scenecut, B-pyramid, three references, so P-frames may use
reference B-frames) and with the bench corpus's veryfast preset (one reference), for both
index rules, for wanted frames that are non-reference B-frames, and for each frame wanted
alone. Streams the reader does not follow must fall back to the plain path.
"""

from __future__ import annotations

import functools

import av
import numpy as np
import pytest

from vidal.media import frames as F
from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.frames import INDEX_RULES, frame_indices, sample_keyframes
from vidal.media.h264refs import H264Refs

SOURCE = ["-f", "lavfi", "-i", "testsrc2=s=192x108:r=30:d=10"]  # 300 frames: GOPs of 250 + 50
X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]  # x264's own GOP: keyint 250, scenecut on
CLIPS = {"default.mp4": X264, "veryfast.mp4": [*X264, "-preset", "veryfast"]}
# stream features the reader must follow: strict pyramids, many references and B-frames,
# temporal direct with weighted B-frames, several slices per frame
VARIANTS = {
    "strict.mp4": [*X264, "-x264-params", "b-pyramid=strict:bframes=5"],
    "refs16.mp4": [*X264, "-x264-params", "ref=16:bframes=8"],
    "temporal.mp4": [*X264, "-x264-params", "direct=temporal:weightb=1"],
    "slices.mp4": [*X264, "-preset", "veryfast", "-x264-params", "slices=4"],
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("h264refs")
    for name, args in {**CLIPS, **VARIANTS}.items():
        run_ffmpeg([*SOURCE, *args, str(folder / name)])
    return {name: str(folder / name) for name in {**CLIPS, **VARIANTS}}


@functools.cache
def _reference(path: str) -> list:
    """Every frame of a plain single-threaded decode, in display order."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return list(container.decode(stream))


def _facts(path: str):
    with av.open(path) as container:
        stream = container.streams.video[0]
        video = F._demux(container, stream)
        return video, H264Refs.read(stream.codec_context.extradata, video.packets)


def _pick(path: str, indices: list[int]) -> np.ndarray:
    """The fast path's frames at `indices` (display order), as RGB."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        video = F._demux(container, stream)
        _, frames = F._pick_by_pts(stream.codec_context, video, indices, False)
        return F._to_rgb(frames, None)


def _expected(path: str, indices: list[int]) -> np.ndarray:
    return F._to_rgb([_reference(path)[i] for i in indices], None)


def test_the_clips_have_long_gops_and_b_pyramids(clips):
    for path in clips.values():  # the variants too: each is followed, none falls back
        video, refs = _facts(path)
        assert refs is not None and len(video.packets) == 300
        assert sum(p.is_keyframe for p in video.packets) == 2  # frames 0 and 250
        kinds = {
            (f.skip, p.slices[0].kind) for f, p in zip(refs.frames, refs.pictures, strict=True)
        }
        assert ("BIDIR", 1) in kinds and ("NONREF", 1) in kinds  # reference and plain Bs


@pytest.mark.parametrize("rule", INDEX_RULES)
@pytest.mark.parametrize("n", [8, 3, 40])
@pytest.mark.parametrize("name", [*CLIPS, *VARIANTS])
def test_exact_frames_equal_a_full_decode(clips, name, rule, n):
    kf = sample_keyframes(clips[name], n, "exact", backend="pyav", rule=rule)
    assert kf.indices == frame_indices(300, n, rule)
    assert np.array_equal(kf.frames, _expected(clips[name], kf.indices)), f"{name} {rule} {n}"


@pytest.mark.parametrize("name", [*CLIPS, *VARIANTS])
def test_wanted_non_reference_b_frames(clips, name):
    video, refs = _facts(clips[name])
    shown = {pts: i for i, pts in enumerate(video.display)}
    plain_b = sorted(
        shown[p.pts]
        for p, f, pic in zip(video.packets, refs.frames, refs.pictures, strict=True)
        if f.skip == "NONREF" and pic.slices[0].kind == 1
    )
    wanted = plain_b[:: len(plain_b) // 8][:8]
    assert len(wanted) == 8
    assert np.array_equal(_pick(clips[name], wanted), _expected(clips[name], wanted))


@pytest.mark.parametrize("name", [*CLIPS, *VARIANTS])
def test_each_frame_wanted_alone(clips, name):
    for i in range(0, 300, 7):
        assert np.array_equal(_pick(clips[name], [i]), _expected(clips[name], [i])), i


def test_reference_b_frames_are_skipped(clips, monkeypatch):
    """The fast path is taken (else the checks above would not test it): reference B-frames
    are skipped, and fewer frames are decoded than skipping only non-reference ones would."""
    seen, real_run = [], F._decode_run

    def spy(context, packets, levels, targets):
        seen.append(levels)
        return real_run(context, packets, levels, targets)

    monkeypatch.setattr(F, "_decode_run", spy)
    sample_keyframes(clips["veryfast.mp4"], 8, "exact", backend="pyav")
    levels = [level for run in seen for level in run]
    video, refs = _facts(clips["veryfast.mp4"])
    references = sum(f.skip != "NONREF" for f in refs.frames)
    assert "BIDIR" in levels
    assert levels.count("DEFAULT") < 0.85 * references


@pytest.mark.parametrize(
    "container, args",
    [
        ("annexb.ts", X264),  # MPEG-TS: start codes, no avcC record
        ("fields.mp4", [*X264, "-x264-params", "interlaced=1"]),  # field coding
    ],
)
def test_streams_it_does_not_follow_fall_back(tmp_path, container, args):
    path = str(tmp_path / container)
    run_ffmpeg([*SOURCE[:-1], "testsrc2=s=192x108:r=30:d=3", *args, path])
    assert _facts(path)[1] is None
    kf = sample_keyframes(path, 8, "exact", backend="pyav")
    assert np.array_equal(kf.frames, _expected(path, kf.indices))


def test_corrupt_headers_give_none_or_facts_never_an_error(clips):
    """Packets come from untrusted files: a damaged slice header must not raise."""
    with av.open(clips["veryfast.mp4"]) as container:
        stream = container.streams.video[0]
        extradata = stream.codec_context.extradata
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(200):
        damaged = [bytearray(p) for p in packets]
        for p in damaged:
            spots = rng.integers(4, min(len(p), 24), size=2)
            p[spots[0]] = rng.integers(0, 256)
            p[spots[1]] ^= 0xFF
        outcomes.add(H264Refs.read(extradata, damaged) is None)
    assert H264Refs.read(bytes(8), packets) is None  # not an avcC record
    assert True in outcomes
