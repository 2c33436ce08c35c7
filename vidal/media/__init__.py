"""Video and audio I/O only: probe, frame sampling, audio extraction, encoders.

Nothing here knows about stages or pipelines.
"""

from vidal.media.ffmpeg import MediaError, ffmpeg_exe, run_ffmpeg

__all__ = ["MediaError", "ffmpeg_exe", "run_ffmpeg"]
