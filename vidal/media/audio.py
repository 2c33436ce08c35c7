"""Audio extraction: the clip's first audio track as 16 kHz mono FLAC (lossless)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile

from vidal.media.container import ffmpeg_input, open_media
from vidal.media.ffmpeg import MediaError, run_ffmpeg


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_samples: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


def audio_output_args(sample_rate: int = 16000) -> list[str]:
    """ffmpeg output options for the dataset's audio: first audio stream, mono, FLAC."""
    return [
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-c:a",
        "flac",
    ]


def extract_audio(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    sample_rate: int = 16000,
    max_duration: float | None = None,
    timeout: float = 300.0,
) -> AudioInfo:
    """Write `src`'s audio to `dst` as FLAC; the video is demuxed but never decoded."""
    limit = ["-t", f"{max_duration:.3f}"] if max_duration else []
    args = [*ffmpeg_input(src), *limit, *audio_output_args(sample_rate), "-f", "flac"]
    try:
        run_ffmpeg([*args, os.fspath(dst)], timeout=timeout)
    except MediaError as exc:
        if "0:a:0" in exc.detail:  # ffmpeg's way of saying the input has no audio stream
            raise MediaError("no_audio", "the file has no audio stream") from exc
        raise
    return read_audio_info(dst)


def read_audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate and length of a written audio file; an empty track is an error."""
    try:
        info = soundfile.info(os.fspath(path))
    except RuntimeError as exc:
        raise MediaError("audio_unreadable", str(exc)) from exc
    frames = info.frames
    if frames >= 2**62:  # a FLAC header's length 0 means "unknown"; count the samples instead
        frames = _count_samples(os.fspath(path))
    if frames == 0:
        raise MediaError("audio_empty", "the audio track decodes to zero samples")
    return AudioInfo(sample_rate=int(info.samplerate), num_samples=int(frames))


def _count_samples(path: str) -> int:
    import av

    try:
        with open_media(path, expect="flac") as container:
            return sum(frame.samples for frame in container.decode(audio=0))
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError("audio_unreadable", str(exc)) from exc


def encode_mp3(
    src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = 16000, timeout: float = 300.0
) -> AudioInfo:
    """`src`'s first audio track as mono MP3 at `sample_rate` (LanguageBind's audio files)."""
    args = [*ffmpeg_input(src), "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1"]
    args += ["-ar", str(sample_rate), "-c:a", "libmp3lame", "-q:a", "2", "-f", "mp3"]
    run_ffmpeg([*args, os.fspath(dst)], timeout=timeout)
    return read_audio_info(dst)


def read_waveform(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """A written audio file (the audio stage's FLAC) as mono float32 at `sample_rate`;
    a file at another rate is an error, not silently resampled."""
    try:
        data, rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except RuntimeError as exc:
        raise MediaError("audio_unreadable", str(exc)) from exc
    if rate != sample_rate:
        raise MediaError("audio_rate", f"{rate} Hz, expected {sample_rate} Hz")
    if not len(data):
        raise MediaError("audio_empty", "the audio track decodes to zero samples")
    return data.mean(axis=1)
