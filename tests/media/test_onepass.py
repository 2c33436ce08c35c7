"""vidal.media.onepass: one ffmpeg per clip for keyframes, FLAC and mp4, opened as vetted."""

from __future__ import annotations

import struct

import av
import ffmpeg
import numpy as np
import pytest

from vidal.media import onepass, synth
from vidal.media.audio import read_audio_info
from vidal.media.encode import EncodeSettings, encode_clip
from vidal.media.ffmpeg import MediaError, run_ffmpeg
from vidal.media.frames import plan_frames, sample_keyframes


@pytest.fixture(scope="module")
def bframes(tmp_path_factory):
    """Long GOP with B-frames (x264's default keyframe choice), as most downloaded videos."""
    path = tmp_path_factory.mktemp("src") / "long-gop.mp4"
    synth.make_bench_clip(path, 5.0, seed=3, keyint_s=None)
    return path


def test_the_input_is_opened_as_the_vetted_open_opens_it(bframes):
    node = onepass.vetted_input(bframes)
    args = ffmpeg.compile(node.output("x.mp4"), cmd="ffmpeg")
    options = args[1 : args.index("-i")]
    before_input = dict(zip(options[::2], options[1::2], strict=True))
    assert before_input["-protocol_whitelist"] == "file"
    assert before_input["-f"] == "mov" and before_input["-enable_drefs"] == "0"
    assert args[args.index("-i") + 1] == f"file:{bframes}"


def test_a_playlist_named_like_a_video_is_refused(tmp_path):
    evil = tmp_path / "evil.mp4"
    evil.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    plan = onepass.FramePlan([0], [0.0], 64, 48)
    with pytest.raises(MediaError) as exc:
        onepass.decode_once(evil, plan, (0,), tmp_path / "c.mp4")
    assert exc.value.reason == "not_media"
    assert not (tmp_path / "c.mp4").exists()


@pytest.mark.parametrize("mode", ["exact", "snap"])
def test_same_frames_as_the_seeking_read_on_a_long_gop(bframes, tmp_path, mode):
    kf = sample_keyframes(bframes, 8, mode, 256, max_seconds=5.0, extra_short_sides=(0,))
    plan = plan_frames(bframes, 8, mode, 5.0)
    assert (plan.indices, plan.timestamps) == (kf.indices, kf.timestamps)
    s = EncodeSettings(max_duration=5.0)
    out = onepass.decode_once(bframes, plan, (256, 0), tmp_path / "c.mp4", s, tmp_path / "a.flac",
                              has_audio=True)  # fmt: skip
    assert np.array_equal(out.frames[0], kf.extra[0])
    diff = np.abs(out.frames[256].astype(int) - kf.frames.astype(int))
    # resized: ffmpeg's libswscale build and PyAV's differ by well under the JPEG's own error
    assert out.frames[256].shape == kf.frames.shape and diff.mean() < 1.0


def test_frames_are_the_same_where_files_cannot_be_mapped(bframes, tmp_path, monkeypatch):
    """The raw frames are mapped from ffmpeg's output; a temp folder on a file system that
    refuses mmap (some FUSE mounts) falls back to reading them, with the same frames."""
    plan = plan_frames(bframes, 8, "exact", 5.0)
    mapped = onepass.decode_once(bframes, plan, (64,), None)
    assert not mapped.frames[64].flags.writeable  # mapped: the page cache's pages

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(onepass.mmap, "mmap", refuse)
    read = onepass.decode_once(bframes, plan, (64,), None)
    assert np.array_equal(read.frames[64], mapped.frames[64])


def test_clip_and_flac_are_what_the_separate_encode_writes(bframes, tmp_path):
    s = EncodeSettings(max_duration=5.0)
    plan = plan_frames(bframes, 8, "exact", 5.0)
    onepass.decode_once(bframes, plan, (), tmp_path / "c.mp4", s, tmp_path / "a.flac",
                        has_audio=True)  # fmt: skip
    encode_clip(bframes, tmp_path / "r.mp4", (1280, 720), s, True, tmp_path / "r.flac")
    assert (tmp_path / "c.mp4").read_bytes() == (tmp_path / "r.mp4").read_bytes()
    assert read_audio_info(tmp_path / "a.flac") == read_audio_info(tmp_path / "r.flac")


def test_everything_stays_inside_the_probed_duration(tmp_path):
    """An MKV whose header says 2 s holds 2 s of red, then 10 s of blue: frames, clip and
    FLAC come from the first 2 s only."""
    path = tmp_path / "lying.mkv"
    run_ffmpeg(
        ["-f", "lavfi", "-i", "color=c=red:s=64x48:r=10:d=2"]
        + ["-f", "lavfi", "-i", "color=c=blue:s=64x48:r=10:d=10"]
        + ["-f", "lavfi", "-i", "sine=d=12", "-filter_complex"]
        + ["[0][1]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a"]
        + ["-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-c:a", "flac", str(path)]
    )
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Segment Duration (float64, ms)
    data[at + 3 : at + 11] = struct.pack(">d", 2000.0)
    path.write_bytes(bytes(data))
    plan = plan_frames(path, 8, "exact", 2.0)
    s = EncodeSettings(max_duration=2.0)
    out = onepass.decode_once(path, plan, (0,), tmp_path / "c.mp4", s, tmp_path / "a.flac",
                              has_audio=True)  # fmt: skip
    assert max(plan.timestamps) < 2.0
    assert all(f.reshape(-1, 3).mean(axis=0)[2] < 60 for f in out.frames[0])  # red, not blue
    with av.open(str(tmp_path / "c.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) <= 21
    assert read_audio_info(tmp_path / "a.flac").duration <= 2.05
