"""probe: what is in the file (PyAV), and whether it is inside the dataset's limits."""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass

import fsspec

from vidal.io.sources import REMOTE_SCHEMES
from vidal.media.ffmpeg import MediaError
from vidal.media.probe import probe, probe_audio
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path


@dataclass
class ProbeStage(MediaStage):
    name = "probe"

    max_duration: float = 20.0  # the paper keeps clips of at most 20 s
    min_duration: float = 0.0
    min_side: int = 16
    max_side: int = 4096
    max_bytes: int = 2 * 1024**3
    fetch_timeout: float = 60.0
    # a file with audio and no video (Freesound's sounds) is an audio-only sample: the frame
    # stages skip it, the audio stage keeps its sound (false: it fails with no_video_stream)
    audio_only: bool = False
    batch_size: int = 32

    def process(self, sample: Sample) -> None:
        if sample.source.lower().startswith(REMOTE_SCHEMES):
            sample.fields["probe"] = {"fetched": self._fetch(sample)}
        with self.media(sample) as path:
            info = self._probe(path)
        sample.fields["probe"] = {**sample.fields.get("probe", {}), **info}
        reason = self._outside_limits(info)
        if reason:
            sample.drop(self.name, reason)

    def _probe(self, path: str) -> dict:
        try:
            return {**probe(path).to_dict(), "has_video": True}
        except MediaError as exc:
            if not (self.audio_only and exc.reason == "no_video_stream"):
                raise
        return probe_audio(path)

    def _outside_limits(self, info: dict) -> str | None:
        duration, width, height = info["duration"], info["width"], info["height"]
        if duration > self.max_duration:
            return f"too_long: {duration:.1f}s > {self.max_duration:g}s"
        if duration < self.min_duration:
            return f"too_short: {duration:.2f}s < {self.min_duration:g}s"
        if not info.get("has_video", True):
            return None  # no picture: no size limits
        if min(width, height) < self.min_side:
            return f"too_small: {width}x{height}, short side < {self.min_side}"
        if max(width, height) > self.max_side:
            return f"too_large: {width}x{height}, long side > {self.max_side}"
        return None

    def _fetch(self, sample: Sample) -> str:
        """Copy a remote source into the store once, with a size cap enforced while reading."""
        suffix = os.path.splitext(sample.source.split("?")[0])[1][:8] or ".mp4"
        rel = payload_path(self.name, sample, suffix)
        src = _open_remote(sample.source, self.fetch_timeout)
        with self.store.staging(rel) as tmp, src, open(tmp, "wb") as dst:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > self.max_bytes:
                    raise MediaError("too_large", f"more than {self.max_bytes} bytes")
                dst.write(chunk)
        return rel


def _open_remote(uri: str, timeout: float):
    try:
        if uri.lower().startswith(("http://", "https://")):
            request = urllib.request.Request(uri, headers={"User-Agent": "vidal"})
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
        return fsspec.open(uri, "rb").open()
    except OSError as exc:
        raise MediaError("network", f"cannot fetch {uri[:120]}: {exc}") from exc
