"""Keyframe sampling: N frames spread uniformly over a clip, read without a full decode.

`exact` returns the frames at LanguageBind's indices (``np.linspace(0, n_frames - 1, N)``,
frame k being the k-th in display order, as decord counts them); `snap` returns, for each of
those, the nearest keyframe (I-frame), which decodes alone and so is far cheaper.

The default backend (PyAV) demuxes the video once, keeping its packets, and then decodes only
what the targets need: from the keyframe before a target up to the target's own packet, with
the decoder told to skip non-reference frames that are not targets (nothing else refers to
them, so the targets come out bit-identical to a full decode). On H.264 it also skips the
reference frames no target needs (the reference B-frames of x264's B-pyramid, most of a long
GOP's B-frames), as the slice headers tell (vidal.media.h264refs). Targets that share a GOP
share one forward pass. Streams whose timestamps cannot give display order (AVI with B-frames, raw
streams) are decoded in full instead, as is any stream a target does not come out of.

decord (LanguageBind's reader) remains as a backend for comparison; it also counts frames an
MP4 edit list hides, so on such cut files its indices differ from what a player shows.
"""

from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass, field

import numpy as np

from vidal.media.container import open_media, vet_for_decord
from vidal.media.ffmpeg import MediaError
from vidal.media.h264refs import H264Refs

MODES = ("exact", "snap")
BACKENDS = ("auto", "pyav", "decord")
INDEX_RULES = ("linspace", "languagebind_gen")


@dataclass
class Keyframes:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    indices: list[int]  # frame index in the source of each frame
    timestamps: list[float]  # seconds from the start of the source
    backend: str
    # the same frames at other short sides (0: the source's size), from the same decode
    extra: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def uniform_indices(total_frames: int, n: int) -> list[int]:
    """LanguageBind's frame choice: n indices from first to last frame, floored."""
    if total_frames <= 0:
        raise MediaError("no_frames", "the video has no decodable frames")
    return np.linspace(0, total_frames - 1, n, dtype=int).tolist()


def languagebind_gen_indices(total_frames: int, n: int) -> list[int]:
    """The frames LanguageBind's generation code read for depth, thermal and OFA captions
    (`modality_generation_codes/*_ddp*.py`): frame ``i * (n_frames // n)`` for i < n, so the
    last frames of a clip are never used (and every index is 0 for clips under n frames)."""
    if total_frames <= 0:
        raise MediaError("no_frames", "the video has no decodable frames")
    step = total_frames // n
    return [i * step for i in range(n)]


def frame_indices(total_frames: int, n: int, rule: str = "linspace") -> list[int]:
    """n frame indices by `rule`: linspace (LanguageBind's training loader) or
    languagebind_gen (its modality generation code)."""
    if rule == "languagebind_gen":
        return languagebind_gen_indices(total_frames, n)
    if rule != "linspace":
        raise ValueError(f"frame index rule must be one of {INDEX_RULES}, not {rule!r}")
    return uniform_indices(total_frames, n)


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side at `short_side`; never upscales; even-free."""
    if not short_side or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def sample_keyframes(
    path: str | os.PathLike,
    n: int = 8,
    mode: str = "exact",
    short_side: int | None = None,
    backend: str = "auto",
    source_size: tuple[int, int] | None = None,
    max_seconds: float | None = None,
    rule: str = "linspace",
    extra_short_sides: tuple[int, ...] = (),
) -> Keyframes:
    """Read `n` uniformly spaced frames of `path` (RGB, short side resized to `short_side`).

    `backend`: auto (= pyav, the fastest exact path measured on 720p h264), pyav or decord.
    `source_size` (width, height), when the caller has probed it already, saves decord a
    second open of the file; PyAV does not need it. `max_seconds` (the probed duration) keeps
    the frames inside the time range the clip and audio are cut to, whatever the file holds
    past what its header says. `rule`: which frames (`frame_indices`). `extra_short_sides`:
    the same frames at these short sides too (0: the source's size; never upscaled), in
    `Keyframes.extra`, for models that want more pixels than the keyframes keep.
    """
    if mode not in MODES:
        raise ValueError(f"keyframes mode must be one of {MODES}, not {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"keyframes backend must be one of {BACKENDS}, not {backend!r}")
    if rule not in INDEX_RULES:
        raise ValueError(f"frame index rule must be one of {INDEX_RULES}, not {rule!r}")
    path = os.fspath(path)
    if backend == "decord":
        kf = _sample_decord(path, n, mode, short_side, source_size, max_seconds, rule)
        for side in extra_short_sides:
            kf.extra[side] = _decord_again(path, kf.indices, side or None, source_size)
    else:
        extra = tuple(extra_short_sides)
        kf = _sample_pyav(path, n, mode, short_side, max_seconds, rule, extra)
    _check_range(kf.timestamps, max_seconds)
    return kf


def _check_range(stamps: list[float], max_seconds: float | None) -> None:
    """Every frame within [0, max_seconds): a frame from outside would show what the clip
    does not (checked after picking, as both backends compute times their own way)."""
    if max_seconds and any(t < 0 or t >= max_seconds + 1e-3 for t in stamps):
        shown = ", ".join(f"{t:g}" for t in stamps)
        raise MediaError("bad_timestamps", f"frames at {shown}s, the clip is {max_seconds:g}s")


# --- decord -------------------------------------------------------------------------------


def _sample_decord(path, n, mode, short_side, source_size, max_seconds, rule) -> Keyframes:
    vet_for_decord(path)  # decord probes the format itself: refuse what could open other files
    try:
        return _decord_frames(path, n, mode, short_side, source_size, max_seconds, rule)
    except MediaError:
        raise
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError on odd files
        raise MediaError("decode_failed", f"decord: {exc}") from exc


def _decord_frames(path, n, mode, short_side, source_size, max_seconds, rule) -> Keyframes:
    import decord

    if source_size is None:
        first = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        source_size = (first[0].shape[1], first[0].shape[0]) if len(first) else (0, 0)
    new_w, new_h = scaled_size(*source_size, short_side)
    # decord resizes inside the decoder's scaler, cheaper than resizing RGB afterwards
    reader = decord.VideoReader(path, ctx=decord.cpu(0), width=new_w, height=new_h, num_threads=1)
    total = len(reader)
    if max_seconds and total:
        starts = reader.get_frame_timestamp(list(range(total)))[:, 0]
        total = int(np.count_nonzero(starts < max_seconds))
    indices = frame_indices(total, n, rule)
    if mode == "snap":
        indices = _nearest(indices, [k for k in reader.get_key_indices() if k < total])
    frames = reader.get_batch(indices).asnumpy()
    stamps = reader.get_frame_timestamp(indices)[:, 0]
    return Keyframes(frames, indices, [round(float(t), 4) for t in stamps], "decord")


def _decord_again(path, indices, short_side, source_size) -> np.ndarray:
    """The frames at `indices` once more, at another size (decord resizes in the decoder)."""
    import decord

    try:
        if source_size is None:
            first = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            source_size = (first[0].shape[1], first[0].shape[0])
        new_w, new_h = scaled_size(*source_size, short_side)
        reader = decord.VideoReader(
            path, ctx=decord.cpu(0), width=new_w, height=new_h, num_threads=1
        )
        return reader.get_batch(indices).asnumpy()
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError on odd files
        raise MediaError("decode_failed", f"decord: {exc}") from exc


def _nearest(targets: list[int], candidates) -> list[int]:
    """For each target, the nearest candidate (the earlier one on a tie)."""
    keys = np.asarray(sorted(candidates), dtype=np.int64)
    if keys.size == 0:
        return list(targets)
    pos = np.clip(np.searchsorted(keys, targets), 1, max(1, keys.size - 1))
    left, right = keys[pos - 1], keys[np.minimum(pos, keys.size - 1)]
    pick = np.where(
        np.abs(np.asarray(targets) - left) <= np.abs(right - np.asarray(targets)), left, right
    )
    return [int(i) for i in pick]


# --- PyAV ---------------------------------------------------------------------------------


@dataclass
class _Video:
    """A clip's video packets in decode order, and what their timestamps say."""

    packets: list  # av.Packet, decode order, hidden ones included
    shown: int  # how many frames a player shows (LanguageBind's indices count these)
    display: list[int] | None  # pts of frame k in display order; None when pts cannot tell
    keys: list[int]  # sorted pts of the keyframes
    where: dict  # pts -> position of its packet in `packets`


def _sample_pyav(
    path: str,
    n: int,
    mode: str,
    short_side: int | None,
    max_seconds: float | None = None,
    rule: str = "linspace",
    extra_short_sides: tuple[int, ...] = (),
) -> Keyframes:
    import av

    try:
        with open_media(path) as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            context.thread_count = 1  # parallelism comes from many clips; skip toggles per packet
            video = _demux(container, stream, _end_pts(stream, max_seconds))
            indices = frame_indices(video.shown, n, rule)
            indices, picked = _pick(context, video, indices, mode == "snap")
            frames = _to_rgb(picked, short_side)
            extra = {side: _to_rgb(picked, side or None) for side in extra_short_sides}
            trusted = video.display is not None
            stamps = [_seconds(f, i, stream, trusted) for i, f in zip(indices, picked, strict=True)]
    except MediaError:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise MediaError("decode_failed", f"pyav: {exc}") from exc
    return Keyframes(frames, indices, stamps, "pyav", extra)


def _end_pts(stream, max_seconds: float | None) -> int | None:
    """The first pts past `max_seconds` from the stream's start (None: no limit)."""
    if not max_seconds or not stream.time_base:
        return None
    return (stream.start_time or 0) + round(max_seconds / stream.time_base)


def _demux(container, stream, end: int | None = None) -> _Video:
    """Read the video packets once (a few MB for a short clip), up to pts `end`; no decoding."""
    everything, cut = [], False
    for packet in container.demux(stream):
        if end is not None and packet.dts is not None and packet.dts >= end:
            cut = True  # every later packet shows later still: past the clip's end
            break
        if packet.size:
            everything.append(packet)
    # an MP4's sample table lists every frame (other containers' counts are guesses): fewer
    # packets mean an interrupted download whose header survived, not a short clip
    listed = stream.frames if container.format.name.split(",")[0] == "mov" and not cut else 0
    if len(everything) < listed:
        raise MediaError("truncated", f"{len(everything)} of the {listed} frames are there")
    # an edit list may hide frames (a cut that starts after a keyframe): they are decoded, as
    # later frames refer to them, but never shown, so they are not counted; nor are frames
    # shown after `end` (decoded only when a frame before `end` refers to them)
    shows = [not p.is_discard and _before(p, end) for p in everything]
    shown = sum(shows)
    if not shown:
        raise MediaError("no_frames", "the video has no decodable frames")
    where = {p.pts: i for i, p in enumerate(everything)}
    keys = sorted(
        p.pts for p in everything if p.is_keyframe and p.pts is not None and _before(p, end)
    )
    trusted = _pts_give_display_order(everything, where, keys, stream.codec_context)
    display = (
        sorted(p.pts for p, s in zip(everything, shows, strict=True) if s) if trusted else None
    )
    return _Video(everything, shown, display, keys, where)


def _before(packet, end: int | None) -> bool:
    return end is None or packet.pts is None or packet.pts < end


def _pts_give_display_order(packets, where, keys, context) -> bool:
    """Whether sorting the packets' timestamps gives display order, as `_pick_by_pts` needs."""
    if None in where or len(where) != len(packets) or not keys or keys[0] != min(where):
        return False
    # AVI keeps no presentation times: its "pts" count packets in decode order, which is
    # display order only for a codec that never reorders frames
    in_decode_order = all(a.pts < b.pts for a, b in itertools.pairwise(packets))
    return not (in_decode_order and context.has_b_frames)


def _pick(context, video: _Video, indices: list[int], snap: bool):
    """(indices, frames): the fast path where timestamps allow it; else, or when a target did
    not come out of it (a stream that cannot restart at its keyframes), a full decode."""
    if video.display is not None:
        try:
            return _pick_by_pts(context, video, indices, snap)
        except MediaError:
            context.flush_buffers()
    return _pick_sequential(context, video, indices, snap)


def _pick_by_pts(context, video: _Video, indices: list[int], snap: bool):
    """(indices, frames), decoding only what the targets need."""
    if snap:
        shown = [k for k in video.keys if not video.packets[video.where[k]].is_discard]
        indices = _nearest(indices, [bisect.bisect_left(video.display, k) for k in shown])
    wanted = sorted({video.display[i] for i in indices})
    # a keyframe decodes alone: each gets its own run (and a fresh decoder, as an open-GOP
    # I-frame fed right after another one upsets h264's reference bookkeeping)
    runs = [(video.where[t], [t]) for t in wanted] if snap else _runs(video, wanted)
    refs = None if snap else _h264_refs(context, video.packets)
    found = {}
    for start, targets in runs:
        last = max(video.where[t] for t in targets)
        run = video.packets[start : last + 1]
        plain = [_skip_level(p, targets) for p in run]
        levels = refs and refs.skip_levels(start, last + 1, {video.where[t] for t in targets})
        found.update(_decode_guarded(context, run, levels or plain, plain, set(targets)))
    return indices, [found[video.display[i]] for i in indices]


def _runs(video: _Video, wanted: list[int]) -> list[tuple[int, list[int]]]:
    """Group targets by the keyframe before them: one forward pass per GOP that holds targets.

    A target in a later GOP starts a new pass at its own keyframe, which never costs more
    than decoding on through the reference frames in between.
    """
    runs: list[tuple[int, list[int]]] = []
    for pts in wanted:
        start = video.where[video.keys[bisect.bisect_right(video.keys, pts) - 1]]
        if runs and runs[-1][0] == start:
            runs[-1][1].append(pts)
        else:
            runs.append((start, [pts]))
    return runs


def _h264_refs(context, packets: list) -> H264Refs | None:
    """What each frame refers to, where the stream is H.264 that `H264Refs` can follow."""
    return H264Refs.read(context.extradata, packets) if context.name == "h264" else None


def _skip_level(packet, targets: list[int]) -> str:
    """Without reference facts: skip only the non-reference frames that are not targets (no
    other frame refers to them, so the targets come out exactly as in a full decode)."""
    return "DEFAULT" if packet.pts in targets else "NONREF"


def _decode_guarded(context, packets: list, levels: list, plain: list, targets: set) -> dict:
    """`_decode_run` with `levels`; should the decoder object to what they skip (a stream
    whose headers misled `H264Refs`), once more with only the non-reference skips."""
    import av

    try:
        return _decode_run(context, packets, levels, targets)
    except (MediaError, av.error.FFmpegError):
        if levels is plain:
            raise
        context.flush_buffers()
        return _decode_run(context, packets, plain, targets)


def _decode_run(context, packets: list, levels: list[str], targets: set[int]) -> dict:
    """{pts: frame} of the targets, from `packets` (decode order, a keyframe first), each
    packet decoded under its skip_frame level (`levels`).

    The level is set per packet: display order differs from decode order, and a target may
    be a frame that the packets around it skip.
    """
    found = {}
    for packet, level in [*zip(packets, levels, strict=True), (None, None)]:
        if level is not None:  # None drains the frames the decoder holds for reordering
            context.skip_frame = level
        found.update((f.pts, f) for f in context.decode(packet) if f.pts in targets)
    context.flush_buffers()  # ready for the next run, which starts at a keyframe
    if targets - found.keys():
        raise MediaError("decode_failed", f"{len(targets - found.keys())} frame(s) did not decode")
    return found


def _pick_sequential(context, video: _Video, indices: list[int], snap: bool):
    """(indices, frames) from a full decode in display order, for streams whose timestamps
    cannot place frames; with `snap`, the keyframe nearest each target as it streams by."""
    kept, pending, last_key, wanted = {}, [], None, set(indices)
    for i, frame in enumerate(_decode_all(context, video.packets)):
        if snap and frame.key_frame:
            kept.update((t, _closer(t, last_key, (i, frame))) for t in pending)
            pending, last_key = [], (i, frame)
        if i in wanted:
            if not snap or (last_key and last_key[0] == i):
                kept[i] = (i, frame)
            else:
                pending.append(i)
    kept.update((t, last_key) for t in pending if last_key)
    if any(kept.get(i) is None for i in indices):
        raise MediaError("decode_failed", "fewer frames decode than the stream holds")
    return [kept[i][0] for i in indices], [kept[i][1] for i in indices]


def _decode_all(context, packets: list):
    context.skip_frame = "DEFAULT"
    for packet in [*packets, None]:
        yield from context.decode(packet)


def _closer(target: int, before, after):
    """The (index, frame) nearer to `target`; the earlier one on a tie, as `_nearest`."""
    return before if before and target - before[0] <= after[0] - target else after


def _seconds(frame, index: int, stream, pts_trusted: bool) -> float:
    """Seconds from the start of the stream (MPEG-TS and friends start their clocks anywhere)."""
    if not pts_trusted or frame.pts is None:
        return round(index / float(stream.average_rate or stream.guessed_rate or 25), 4)
    return round(float((frame.pts - (stream.start_time or 0)) * stream.time_base), 4)


def _to_rgb(frames: list, short_side: int | None) -> np.ndarray:
    """RGB arrays resized by swscale's bicubic, as decord and the clip encode resize."""
    from av.video.reformatter import VideoReformatter

    new_w, new_h = scaled_size(frames[0].width, frames[0].height, short_side)
    scaler = VideoReformatter()  # one scaler for all frames: set up once, not per frame
    size = dict(width=new_w, height=new_h, format="rgb24", interpolation="BICUBIC", threads=1)
    return np.stack([scaler.reformat(f, **size).to_ndarray() for f in frames])


# --- planning without decoding (the one-pass media path, vidal.media.onepass) --------------


@dataclass(frozen=True)
class FramePlan:
    """Which frames `sample_keyframes` would return, found from the packets alone."""

    indices: list[int]  # display-order frame numbers, as an ffmpeg `select` on `n` counts
    timestamps: list[float]
    width: int
    height: int


def plan_frames(
    path: str | os.PathLike,
    n: int = 8,
    mode: str = "exact",
    max_seconds: float | None = None,
    rule: str = "linspace",
) -> FramePlan | None:
    """The frames of `sample_keyframes(path, n, mode, max_seconds=..., rule=...)` (PyAV), from
    one open that demuxes and decodes nothing; None when only a decode can tell (snap on a
    stream whose timestamps do not give display order)."""
    import av

    try:
        with open_media(path) as container:
            stream = container.streams.video[0]
            video = _demux(container, stream, _end_pts(stream, max_seconds))
            indices = frame_indices(video.shown, n, rule)
            if video.display is None:
                if mode == "snap":
                    return None
                fps = float(stream.average_rate or stream.guessed_rate or 25)
                stamps = [round(i / fps, 4) for i in indices]
            else:
                if mode == "snap":
                    shown = [k for k in video.keys if not video.packets[video.where[k]].is_discard]
                    keys = [bisect.bisect_left(video.display, k) for k in shown]
                    indices = _nearest(indices, keys)
                start, base = stream.start_time or 0, stream.time_base
                stamps = [round(float((video.display[i] - start) * base), 4) for i in indices]
            size = (int(stream.codec_context.width), int(stream.codec_context.height))
    except MediaError:
        raise
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise MediaError("decode_failed", f"pyav: {exc}") from exc
    _check_range(stamps, max_seconds)
    return FramePlan(indices, stamps, *size)
