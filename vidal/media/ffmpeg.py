"""Locating and running ffmpeg: a system binary when one is on PATH, else imageio-ffmpeg's."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


class MediaError(Exception):
    """A media operation failed for a reason a person can act on.

    `reason` is a short slug (``not_video``, ``no_audio``, ``ffmpeg_missing`` ...) that ends up
    in per-sample error rows and in the counts of the shard stats; `detail` is the specifics.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $VIDAL_FFMPEG, else ffmpeg on PATH, else imageio-ffmpeg's."""
    override = os.environ.get("VIDAL_FFMPEG")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MediaError("ffmpeg_missing", f"VIDAL_FFMPEG={override} is not an executable file")
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MediaError(
            "ffmpeg_missing", "no ffmpeg on PATH and imageio-ffmpeg is not installed"
        ) from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], timeout: float = 600.0) -> None:
    """Run ffmpeg with `args` (no shell); raise MediaError with the tail of stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError("timeout", f"ffmpeg ran longer than {timeout:.0f}s") from exc
    except OSError as exc:
        raise MediaError("ffmpeg_missing", f"cannot run {cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise MediaError("ffmpeg_failed", " | ".join(tail) or f"exit code {proc.returncode}")
