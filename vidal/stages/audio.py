"""audio: the clip's audio track as 16 kHz mono FLAC; a clip without audio is noted, not failed."""

from __future__ import annotations

from dataclasses import dataclass

from vidal.media.audio import extract_audio, read_audio_info
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path
from vidal.stages.media_pass import adopted, pass_without_frames
from vidal.stages.outputs import Member, Outputs, Public
from vidal.stages.registry import register


@register
@dataclass
class AudioStage(MediaStage):
    name = "audio"
    runs_ffmpeg = True
    outputs = Outputs(
        members=(Member("flac", "audio/flac", size_column="flac_bytes"),),
        public=Public(default={"present": False}),
        reads={"probe": ("has_audio", "duration")},
        optional_reads={"probe": ("fetched", "has_video", "width", "height")},
    )

    sample_rate: int = 16000
    batch_size: int = 16

    def process(self, sample: Sample) -> None:
        probe = sample.fields["probe"]
        if not probe.get("has_audio"):
            sample.fields[self.name] = {"present": False}
            return
        rel = adopted(self, sample) or self._pass_with_clip(sample)
        if rel is not None:
            with self.store.local_copy(rel) as local:
                info = read_audio_info(local)
        else:
            rel = payload_path(self.name, sample, ".flac")
            with self.media(sample) as path, self.store.staging(rel) as tmp:
                info = extract_audio(
                    path,
                    tmp,
                    self.sample_rate,
                    probe.get("duration"),
                    timeout=self.ffmpeg_timeout(sample),
                )
        sample.fields[self.name] = {
            "present": True,
            "file": rel,
            "sample_rate": info.sample_rate,
            "num_samples": info.num_samples,
            "duration": round(info.duration, 4),
        }

    def _pass_with_clip(self, sample: Sample) -> str | None:
        """The FLAC and the later clip stage's mp4 from one pass (media_pass), for a clip
        with video; None where this stage is no leader of a clip."""
        info = sample.fields["probe"]
        mp = getattr(self, "media_pass", None)
        if mp is None or mp.clip is None or not info.get("has_video", True):
            return None
        return pass_without_frames(self, sample)
