"""One decode per clip: keyframes at several sizes, the 16 kHz FLAC and the h264 clip from
ONE ffmpeg process, whose multi-output filter graph is built with ffmpeg-python.

The frames to keep are found first from the packets alone (`frames.plan_frames`: a demux, no
decode), so the graph can pick them with a `select` on the frame number `n`: the decoder
emits frames in display order, so `n` counts what `sample_keyframes` counts and the same
frames come out. The input is opened exactly as `container.ffmpeg_input` opens it (demuxer
forced to the sniffed container, only the `file` protocol); the binary is `ffmpeg_exe()`.

    [0:v:0] -> split -> scale -> libx264 ------------------------\
                     -> trim(end_frame) -> select(n) -> scale -> rgb24 (one per size)
    [0:a:0] -> asplit -> aac ------------------------------------/-> clip.mp4
                      -> 16 kHz mono flac -> audio.flac
"""

from __future__ import annotations

import mmap
import os
import tempfile
from dataclasses import dataclass

import ffmpeg
import numpy as np

from vidal.media.container import ffmpeg_input
from vidal.media.encode import EncodeSettings, even_size
from vidal.media.ffmpeg import MediaError, ffmpeg_exe, run_ffmpeg
from vidal.media.frames import FramePlan, scaled_size


@dataclass
class PassOutputs:
    """What one pass writes: the mp4 and FLAC paths given, and the frames at each short side."""

    # short side (0: the source's size) -> (N, H, W, 3) uint8, read-only (mapped from ffmpeg's
    # output file)
    frames: dict[int, np.ndarray]


def vetted_input(path: str | os.PathLike, **extra) -> ffmpeg.nodes.FilterableStream:
    """An ffmpeg-python input node carrying `ffmpeg_input(path)`'s options, unchanged."""
    args = ffmpeg_input(path)
    if len(args) % 2 or args[-2] != "-i":
        raise ValueError(f"unexpected input arguments {args!r}")
    options = {args[i].lstrip("-"): args[i + 1] for i in range(0, len(args) - 2, 2)}
    fmt = options.pop("f")
    return ffmpeg.input(args[-1], format=fmt, **options, **extra)


def decode_once(
    src: str | os.PathLike,
    plan: FramePlan,
    short_sides: tuple[int, ...],
    clip_dst: str | os.PathLike | None,
    settings: EncodeSettings = EncodeSettings(),
    audio_dst: str | os.PathLike | None = None,
    audio_rate: int = 16000,
    has_audio: bool = False,
    timeout: float = 600.0,
) -> PassOutputs:
    """Run the one pass; `plan.indices` are the frames, at every short side in `short_sides`
    (0: the source's size; never upscaled). Writes `clip_dst` (mp4) and `audio_dst` (FLAC,
    only when `has_audio`), both cut to `settings.max_duration`."""
    wanted = sorted(set(plan.indices))
    with tempfile.TemporaryDirectory(prefix="vidal-pass-") as tmp:
        raws = {side: os.path.join(tmp, f"{side}.rgb") for side in short_sides}
        graph = _graph(
            src, plan, wanted, raws, clip_dst, settings, audio_dst, audio_rate, has_audio
        )
        args = ffmpeg.compile(graph, cmd=ffmpeg_exe())[1:]
        run_ffmpeg(["-filter_complex_threads", str(settings.threads), *args], timeout=timeout)
        frames = {s: _read_raw(raws[s], plan, s, len(wanted)) for s in short_sides}
    where = {index: k for k, index in enumerate(wanted)}
    order = [where[i] for i in plan.indices]
    if order == list(range(len(wanted))):  # in order, none asked twice: no copy to reorder
        return PassOutputs(frames)
    return PassOutputs({side: f[order] for side, f in frames.items()})


def _graph(src, plan, wanted, raws, clip_dst, settings, audio_dst, audio_rate, has_audio):
    source = vetted_input(src, threads=str(settings.threads))
    branches = len(raws) + (clip_dst is not None)
    video = source["v:0"].split() if branches > 1 else None
    take = (lambda k: video[k]) if video is not None else (lambda k: source["v:0"])
    outputs, k = [], 0
    # trim ends the frame branch after the last wanted frame, so it never waits on the rest
    pick = "+".join(f"not(n-{i})" for i in wanted)  # no commas: nothing to escape in the graph
    for side, raw in raws.items():
        width, height = scaled_size(plan.width, plan.height, side or None)
        branch = take(k).filter("trim", end_frame=wanted[-1] + 1).filter("select", pick)
        branch = branch.filter("scale", width, height, flags="bicubic").filter("format", "rgb24")
        outputs.append(ffmpeg.output(branch, raw, f="rawvideo", fps_mode="passthrough"))
        k += 1
    audio = _audio_branches(source, clip_dst is not None and settings.keep_audio, audio_dst)
    audio = audio if has_audio else {}
    limit = {"t": f"{settings.max_duration:.3f}"} if settings.max_duration else {}
    if clip_dst is not None:
        outputs.append(_clip_output(take(k), audio.get("aac"), clip_dst, plan, settings, limit))
    if "flac" in audio:
        flac = {"ac": 1, "ar": audio_rate, "acodec": "flac", "f": "flac", **limit}
        outputs.append(ffmpeg.output(audio["flac"], os.fspath(audio_dst), **flac))
    return ffmpeg.merge_outputs(*outputs)


def _audio_branches(source, for_clip: bool, audio_dst) -> dict:
    names = [n for n, wanted in (("aac", for_clip), ("flac", audio_dst is not None)) if wanted]
    if len(names) < 2:
        return {n: source["a:0"] for n in names}
    split = source["a:0"].asplit()
    return {n: split[i] for i, n in enumerate(names)}


def _clip_output(video, audio, dst, plan: FramePlan, settings: EncodeSettings, limit: dict):
    """The clip as `encode.encode_clip` writes it (same scaler, codec and options)."""
    width, height = even_size(plan.width, plan.height, settings.short_side)
    video = video.filter("scale", width, height, flags="bicubic").filter("setsar", 1)
    options = {
        "vcodec": "libx264",
        "preset": settings.preset,
        "crf": settings.crf,
        "pix_fmt": "yuv420p",
        "threads": settings.threads,
        "map_metadata": "-1",
        "movflags": "+faststart",
        "f": "mp4",
        **limit,
    }
    if settings.tune:
        options["tune"] = settings.tune
    if audio is None:
        return ffmpeg.output(video, os.fspath(dst), an=None, **options)
    audio_options = {"acodec": "aac", "audio_bitrate": settings.audio_bitrate, "ac": 1}
    return ffmpeg.output(video, audio, os.fspath(dst), **options, **audio_options)


def _read_raw(path: str, plan: FramePlan, side: int, count: int) -> np.ndarray:
    """The frames ffmpeg wrote to `path`, mapped rather than read: the page cache's pages are
    the array (reading ~24 MB of full-size frames into fresh memory cost 40-100 ms of CPU a
    clip here, mapping them ~2 ms). Read-only; the mapping outlives the file's removal."""
    width, height = scaled_size(plan.width, plan.height, side or None)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if size != count * width * height * 3:
        got = size // max(1, width * height * 3)
        raise MediaError("decode_failed", f"{got} of {count} keyframes came out of the pass")
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
    except (OSError, ValueError):  # a temp folder on a file system that cannot map files
        data = np.fromfile(path, dtype=np.uint8)
    return data.reshape(count, height, width, 3)
