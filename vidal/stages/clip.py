"""clip: the training clip, re-encoded to h264 with the short side at 256 (configurable)."""

from __future__ import annotations

from dataclasses import dataclass

from vidal.media.encode import EncodeSettings, encode_clip, even_size
from vidal.media.ffmpeg import MediaError
from vidal.media.probe import probe
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path
from vidal.stages.keyframes import skip_without_video
from vidal.stages.media_pass import adopted, pass_without_frames
from vidal.stages.outputs import Member, Outputs, Public
from vidal.stages.registry import register


@register
@dataclass
class ClipStage(MediaStage):
    name = "clip"
    runs_ffmpeg = True
    outputs = Outputs(
        members=(
            Member(
                "mp4",
                "video/mp4",
                size_column="mp4_bytes",
                preview="video",
                label="frames",
                modality="video",
            ),
        ),
        public=Public(),
        reads={"probe": ("width", "height", "duration", "has_audio")},
        optional_reads={"probe": ("fetched",)},
    )

    short_side: int = 256
    crf: int = 23
    # x264 medium: the cheapest preset whose bytes and PSNR are no worse than video2dataset's
    # (ffmpeg's defaults, medium crf 23); veryfast costs 0.75x the encode at 1.5 dB less
    preset: str = "medium"
    keep_audio: bool = True  # an aac track in the mp4 too (the FLAC is the lossless copy)
    audio_bitrate: str = "96k"
    threads: int = 1  # one ffmpeg thread per clip; parallelism comes from running many clips
    tune: str | None = None  # x264 --tune; None: x264's default (README: encoder settings)
    batch_size: int = 4

    def encode_settings(self, info: dict) -> EncodeSettings:
        """The encode of a clip probed as `info` (cut to its probed duration)."""
        return EncodeSettings(
            self.short_side,
            self.crf,
            self.preset,
            self.keep_audio,
            self.audio_bitrate,
            self.threads,
            info.get("duration"),
            self.tune,
        )

    def process(self, sample: Sample) -> None:
        if skip_without_video(self.name, sample):
            return  # audio only: the FLAC is the sample's media
        info = sample.fields["probe"]
        rel = adopted(self, sample)
        if rel is None and getattr(self, "media_pass", None) and self.media_pass.audio:
            rel = pass_without_frames(self, sample)
        if rel is None:
            rel = payload_path(self.name, sample, ".mp4")
            with self.media(sample) as path, self.store.staging(rel) as tmp:
                encode_clip(
                    path,
                    tmp,
                    (info["width"], info["height"]),
                    self.encode_settings(info),
                    has_audio=bool(info.get("has_audio")),
                    timeout=self.ffmpeg_timeout(sample),
                )
        with self.store.local_copy(rel) as local:
            written = probe(local)
        if written.num_frames == 0:
            raise MediaError("encode_empty", "the encoded clip has no frames")
        width, height = even_size(info["width"], info["height"], self.short_side)
        sample.fields[self.name] = {
            "file": rel,
            "width": width,
            "height": height,
            "bytes": written.size_bytes,
            "duration": written.duration,
            "has_audio": written.has_audio,
        }
