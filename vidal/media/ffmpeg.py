"""Locating and running ffmpeg: imageio-ffmpeg's static binary, or $VIDAL_FFMPEG.

A dataset builder must give the same bytes on every machine, so an ffmpeg on PATH is never
used by itself (Debian's 5.1, for one, refuses filters the bundled build takes); the version
in use is recorded in each sample's lineage and in dataset.json.
"""

from __future__ import annotations

import functools
import os
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
    """Path of the ffmpeg binary: $VIDAL_FFMPEG when set, else imageio-ffmpeg's."""
    override = os.environ.get("VIDAL_FFMPEG")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise MediaError("ffmpeg_missing", f"VIDAL_FFMPEG={override} is not an executable file")
        return override
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MediaError(
            "ffmpeg_missing", "imageio-ffmpeg is not installed and VIDAL_FFMPEG is not set"
        ) from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    """The version of the ffmpeg in use (`n9.0.2-...`), or why there is none; never raises."""
    try:
        return _version_of(ffmpeg_exe())
    except MediaError as exc:
        return f"unavailable: {exc}"


@functools.cache
def _version_of(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"
    words = (out.stdout.splitlines() or [""])[0].split()
    # "ffmpeg version n9.0.2-17-g2a571b6068-20260930 Copyright (c) ..."
    return words[2] if len(words) > 2 and words[1] == "version" else "unknown"


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
