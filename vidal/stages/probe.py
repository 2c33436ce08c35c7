"""probe: what is in the file (PyAV), and whether it is inside the dataset's limits."""

from __future__ import annotations

import os
from dataclasses import dataclass

import fsspec
import pyarrow as pa

from vidal import net
from vidal.io.sources import REMOTE_SCHEMES, VIDEO_EXTENSIONS
from vidal.media.ffmpeg import MediaError
from vidal.media.probe import probe, probe_audio
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path
from vidal.stages.outputs import Column, Funnel, Histogram, Outputs, Public
from vidal.stages.registry import register

PUBLIC = (
    "duration",
    "fps",
    "width",
    "height",
    "num_frames",
    "video_codec",
    "pix_fmt",
    "has_audio",
    "has_video",
)


def _duration(public: dict) -> str | None:
    seconds = public.get("duration")
    return None if seconds is None else f"{seconds:.1f} s"


@register
@dataclass
class ProbeStage(MediaStage):
    name = "probe"
    outputs = Outputs(
        columns=(
            Column("duration", pa.float64(), "duration", Histogram("duration (kept)", "seconds")),
            Column("width", pa.int64(), "width"),
            Column("height", pa.int64(), "height"),
            Column("fps", pa.float64(), "fps"),
            Column("has_audio", pa.bool_(), "has_audio"),
        ),
        public=Public("source_video", fields=PUBLIC, summary=_duration),
        funnel=Funnel("decoded"),
    )

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
        try:
            with self.media(sample) as path:
                self._check_size(path)
                info = self._probe(path)
        except MediaError as exc:
            self._forget_refused_copy(sample, exc)
            raise
        sample.fields["probe"] = {**sample.fields.get("probe", {}), **info}
        reason = self._outside_limits(info)
        if reason:
            sample.drop(self.name, reason)

    def _forget_refused_copy(self, sample: Sample, exc: MediaError) -> None:
        """A fetched playlist or manifest is not kept: a tool that opened it later would
        follow it to whatever it names."""
        fetched = sample.fields.get("probe", {}).get("fetched")
        if fetched and exc.reason in ("not_media", "too_large"):
            self.store.remove(fetched)
            del sample.fields["probe"]["fetched"]

    def _check_size(self, path: str) -> None:
        """max_bytes holds for local files too: later stages read the whole file."""
        try:
            size = os.path.getsize(path)
        except OSError:
            return  # probe names what is wrong with a missing file
        if size > self.max_bytes:
            raise MediaError("too_large", f"{size} bytes > max_bytes {self.max_bytes}")

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
        """Copy a remote source into the store once, with a size cap enforced while reading.

        The copy keeps the URL's extension only when it is a video container's, so a name
        like `x.m3u8` never picks a playlist demuxer; a text body (playlist, manifest, page)
        is refused from its first bytes."""
        suffix = os.path.splitext(sample.source.split("?")[0])[1][:8].lower()
        rel = payload_path(self.name, sample, suffix if suffix in VIDEO_EXTENSIONS else ".bin")
        policy = net.UrlPolicy(allow_private=getattr(self.ctx, "allow_private_addresses", False))
        src = _open_remote(sample.source, self.fetch_timeout, policy)
        with self.store.staging(rel) as tmp, src, open(tmp, "wb") as dst:
            copied = 0
            while chunk := src.read(1 << 20):
                if not copied and (kind := net.text_body(chunk)):
                    raise MediaError("not_media", f"{kind}, not a media container")
                copied += len(chunk)
                if copied > self.max_bytes:
                    raise MediaError("too_large", f"more than {self.max_bytes} bytes")
                dst.write(chunk)
        return rel


def _open_remote(uri: str, timeout: float, policy: net.UrlPolicy):
    """http(s) through the URL policy (vidal.net); object stores through fsspec."""
    try:
        if uri.lower().startswith(("http://", "https://")):
            return net.open_url(uri, policy, timeout)
        return fsspec.open(uri, "rb").open()
    except net.UrlRefused as exc:
        raise MediaError(net.UrlRefused.reason, exc.detail) from None
    except OSError as exc:
        detail = net.redact_text(f"cannot fetch {net.redact(uri)[:120]}: {exc}")
        raise MediaError("network", detail) from None
