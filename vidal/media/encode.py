"""Clip re-encode: h264 with the short side at a target size, by one ffmpeg process.

The same process can also write the audio track, so the file is read and decoded once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidal.media.audio import audio_output_args
from vidal.media.container import ffmpeg_input
from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.frames import scaled_size


@dataclass(frozen=True)
class EncodeSettings:
    short_side: int = 256
    crf: int = 23
    preset: str = "medium"  # the clip stage's default (README: encoder settings)
    keep_audio: bool = True
    audio_bitrate: str = "96k"
    threads: int = 1
    max_duration: float | None = None
    tune: str | None = None  # x264 --tune (e.g. fastdecode); None: x264's default


def even_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The scaled size rounded to even numbers, as yuv420p h264 requires."""
    new_w, new_h = scaled_size(width, height, short_side)
    return max(2, new_w - new_w % 2), max(2, new_h - new_h % 2)


def encode_clip(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    size: tuple[int, int],
    settings: EncodeSettings = EncodeSettings(),
    has_audio: bool = False,
    audio_dst: str | os.PathLike | None = None,
    audio_rate: int = 16000,
    timeout: float = 600.0,
) -> None:
    """Re-encode `src` (of `size` = (width, height)) into `dst` (mp4), optionally also its audio."""
    width, height = even_size(*size, settings.short_side)
    limit = ["-t", f"{settings.max_duration:.3f}"] if settings.max_duration else []
    video = [
        "-map",
        "0:v:0",
        "-vf",
        f"scale={width}:{height}:flags=bicubic,setsar=1",
        "-c:v",
        "libx264",
        "-preset",
        settings.preset,
        "-crf",
        str(settings.crf),
        "-pix_fmt",
        "yuv420p",
        "-threads",
        str(settings.threads),
        *(["-tune", settings.tune] if settings.tune else []),
    ]
    audio = ["-map", "0:a:0", "-c:a", "aac", "-b:a", settings.audio_bitrate, "-ac", "1"]
    args = ["-threads", str(settings.threads), *ffmpeg_input(src), *limit, *video]
    args += audio if (has_audio and settings.keep_audio) else ["-an"]
    args += [
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        os.fspath(dst),
    ]
    if has_audio and audio_dst is not None:
        args += [*limit, *audio_output_args(audio_rate), "-f", "flac", os.fspath(audio_dst)]
    run_ffmpeg(args, timeout=timeout)
