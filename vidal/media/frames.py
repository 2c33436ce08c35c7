"""Keyframe sampling: N frames spread uniformly over a clip, read by seeking, not by a full
decode.

`exact` returns the frames at LanguageBind's indices (``np.linspace(0, n_frames - 1, N)``);
`snap` returns, for each of those, the nearest keyframe (I-frame), which needs no decode of the
frames in between and so is several times cheaper. decord does the seeking; PyAV takes over
when decord cannot open a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from vidal.media.ffmpeg import MediaError

MODES = ("exact", "snap")


@dataclass
class Keyframes:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    indices: list[int]  # frame index in the source of each frame
    timestamps: list[float]  # seconds from the start of the source
    backend: str

    def __len__(self) -> int:
        return len(self.indices)


def uniform_indices(total_frames: int, n: int) -> list[int]:
    """LanguageBind's frame choice: n indices from first to last frame, floored."""
    if total_frames <= 0:
        raise MediaError("no_frames", "the video has no decodable frames")
    return np.linspace(0, total_frames - 1, n, dtype=int).tolist()


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
) -> Keyframes:
    """Read `n` uniformly spaced frames of `path` (RGB, short side resized to `short_side`).

    `source_size` (width, height), when the caller has probed it already, saves decord a
    second open of the file.
    """
    if mode not in MODES:
        raise ValueError(f"keyframes mode must be one of {MODES}, not {mode!r}")
    path = os.fspath(path)
    if backend in ("auto", "decord"):
        try:
            return _sample_decord(path, n, mode, short_side, source_size)
        except MediaError:
            raise
        except Exception as exc:  # decord raises bare DECORDError/RuntimeError on odd files
            if backend == "decord":
                raise MediaError("decode_failed", f"decord: {exc}") from exc
    return _sample_pyav(path, n, mode, short_side)


def _sample_decord(path, n, mode, short_side, source_size) -> Keyframes:
    import decord

    if source_size is None:
        first = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        source_size = (first[0].shape[1], first[0].shape[0]) if len(first) else (0, 0)
    new_w, new_h = scaled_size(*source_size, short_side)
    # decord resizes inside the decoder's scaler, cheaper than resizing RGB afterwards
    reader = decord.VideoReader(path, ctx=decord.cpu(0), width=new_w, height=new_h, num_threads=1)
    indices = uniform_indices(len(reader), n)
    if mode == "snap":
        indices = _nearest(indices, reader.get_key_indices())
    frames = reader.get_batch(indices).asnumpy()
    stamps = reader.get_frame_timestamp(indices)[:, 0]
    return Keyframes(frames, indices, [round(float(t), 4) for t in stamps], "decord")


def _nearest(targets: list[int], candidates) -> list[int]:
    keys = np.asarray(sorted(candidates), dtype=np.int64)
    if keys.size == 0:
        return list(targets)
    pos = np.clip(np.searchsorted(keys, targets), 1, max(1, keys.size - 1))
    left, right = keys[pos - 1], keys[np.minimum(pos, keys.size - 1)]
    pick = np.where(
        np.abs(np.asarray(targets) - left) <= np.abs(right - np.asarray(targets)), left, right
    )
    return [int(i) for i in pick]


def _sample_pyav(path: str, n: int, mode: str, short_side: int | None) -> Keyframes:
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            total = stream.frames or _count_frames(container, stream)
            indices = uniform_indices(total, n)
            picked = [_frame_at(container, stream, i / fps, mode == "snap") for i in indices]
    except MediaError:
        raise
    except (av.error.FFmpegError, IndexError, StopIteration) as exc:
        raise MediaError("decode_failed", f"pyav: {exc}") from exc
    width, height = picked[0].width, picked[0].height
    new_w, new_h = scaled_size(width, height, short_side)
    frames = np.stack([f.to_ndarray(width=new_w, height=new_h, format="rgb24") for f in picked])
    stamps = [round(float(f.time or 0.0), 4) for f in picked]
    real = [int(round(t * fps)) for t in stamps] if mode == "snap" else indices
    return Keyframes(frames, real, stamps, "pyav")


def _count_frames(container, stream) -> int:
    count = sum(1 for _ in container.demux(stream) if _.size)
    container.seek(0)
    return count


def _frame_at(container, stream, seconds: float, first_after_seek: bool):
    """The frame shown at `seconds` (or, with first_after_seek, the keyframe before it)."""
    target_pts = int(seconds / stream.time_base)
    container.seek(max(target_pts, 0), stream=stream, backward=True, any_frame=False)
    last = None
    for frame in container.decode(stream):
        if first_after_seek:
            return frame
        if frame.pts is not None and frame.pts > target_pts and last is not None:
            return last
        last = frame
        if frame.pts is not None and frame.pts >= target_pts:
            return frame
    if last is None:
        raise MediaError("decode_failed", f"no frame decodes at {seconds:.2f}s")
    return last
