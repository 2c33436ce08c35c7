"""keyframes: N uniformly spaced frames by seeking, stored tiled side by side in one image.

Every per-frame modality (depth, infrared, keyframe captions) uses these frame indices, so
frame k of each modality shows the same moment. `indices` picks them: `linspace` (LanguageBind's
training loader, ``np.linspace(0, n - 1, 8)``) or `languagebind_gen` (its modality generation
code, frame ``i * (n // 8)``). With `full_frames`, the same frames are also stored at
`full_short_side` (0: the source's size), from the same decode, for model stages that read
frames at their model's resolution (`frames: full`). When no filter stage sits between this
stage and audio/clip, the frames come from the one pass that also writes their FLAC and mp4
(vidal.stages.media_pass).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from vidal.media.ffmpeg import MediaError
from vidal.media.frames import INDEX_RULES, Keyframes, plan_frames, sample_keyframes
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path
from vidal.stages.media_pass import run_pass
from vidal.stages.outputs import Column, Funnel, Outputs, Public
from vidal.stages.registry import register


def tile(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (H, N*W, C): frame k occupies columns [k*W, (k+1)*W)."""
    return np.concatenate(list(frames), axis=1)


def untile(image: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `tile`: (H, N*W, ...) -> (N, H, W, ...)."""
    return np.stack(np.split(image, n, axis=1))


@register
@dataclass
class KeyframesStage(MediaStage):
    name = "keyframes"
    outputs = Outputs(
        columns=(Column("frame_indices", pa.list_(pa.int64()), "indices"),),
        public=Public(
            "frames", fields=("indices", "index_rule", "timestamps", "count", "width", "height")
        ),
        reads={"probe": ("width", "height")},
        optional_reads={"probe": ("fetched",)},
        funnel=Funnel("decoded"),
    )

    num_frames: int = 8
    mode: str = "exact"  # exact: LanguageBind's indices; snap: nearest keyframes, much cheaper
    short_side: int = 256
    backend: str = "auto"  # auto (decord, then PyAV), decord, pyav
    image_format: str = "jpg"  # jpg (quality below) or png (lossless)
    jpeg_quality: int = 95
    indices: str = "linspace"  # linspace | languagebind_gen
    full_frames: bool = False  # also store the frames at full_short_side for model stages
    full_short_side: int = 0  # 0: the source's size (never upscaled)
    batch_size: int = 8

    def check(self) -> str | None:
        if self.mode not in ("exact", "snap"):
            return f"keyframes.mode must be 'exact' or 'snap', got {self.mode!r}"
        if self.indices not in INDEX_RULES:
            return f"keyframes.indices must be one of {INDEX_RULES}, got {self.indices!r}"
        return None

    def process(self, sample: Sample) -> None:
        info = sample.fields["probe"]
        if skip_without_video(self.name, sample):
            return
        with self.media(sample) as path:
            kf = self._one_pass(sample, path) or sample_keyframes(
                path,
                self.num_frames,
                self.mode,
                self.short_side,
                self.backend,
                source_size=(info["width"], info["height"]),
                # the clip and audio are cut to the probed duration: so are the frames
                max_seconds=info.get("duration") or None,
                rule=self.indices,
                extra_short_sides=self._extra_sides(),
            )
        rel = payload_path(self.name, sample, f".{self.image_format}")
        self.store.write_bytes(rel, self._encode(tile(kf.frames)))
        fields = {
            "file": rel,
            "indices": kf.indices,
            "index_rule": self.indices,
            "timestamps": kf.timestamps,
            "width": int(kf.frames.shape[2]),
            "height": int(kf.frames.shape[1]),
            "count": len(kf),
            "backend": kf.backend,
        }
        if self.full_frames:
            full = kf.extra[self.full_short_side]
            full_rel = payload_path(self.name, sample, f".full.{self.image_format}")
            self.store.write_bytes(full_rel, self._encode(tile(full)))
            fields["full"] = {"file": full_rel, "width": full.shape[2], "height": full.shape[1]}
        sample.fields[self.name] = fields

    def _extra_sides(self) -> tuple[int, ...]:
        return (self.full_short_side,) if self.full_frames else ()

    def _one_pass(self, sample: Sample, path: str) -> Keyframes | None:
        """The keyframes from the one pass that also writes the later stages' FLAC and mp4
        (vidal.stages.media_pass); None when this pipeline or clip does not take that path,
        or the pass failed (the separate reads then say what is wrong, stage by stage)."""
        if getattr(self, "media_pass", None) is None or self.backend == "decord":
            return None
        seconds = sample.fields["probe"].get("duration") or None
        plan = plan_frames(path, self.num_frames, self.mode, seconds, self.indices)
        if plan is None:
            return None  # snap where only a decode tells keyframes apart
        sides = tuple(dict.fromkeys((self.short_side, *self._extra_sides())))
        try:
            out = run_pass(self, sample, path, plan, sides)
        except MediaError:
            return None  # the seeking read, then audio and clip on their own, say what is wrong
        extra = {side: out.frames[side] for side in self._extra_sides()}
        return Keyframes(
            out.frames[self.short_side], plan.indices, plan.timestamps, "ffmpeg", extra
        )

    def _encode(self, image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        if self.image_format == "png":
            Image.fromarray(image).save(buf, format="PNG", compress_level=3)
        else:
            Image.fromarray(image).save(buf, format="JPEG", quality=self.jpeg_quality)
        return buf.getvalue()


def load_keyframes(store, fields: dict, full: bool = False) -> np.ndarray:
    """The stored keyframes of a sample as (N, H, W, 3) uint8; `full`: the full-size copy."""
    if full and "full" not in fields:
        raise KeyError("no full-size frames: the keyframes stage needs full_frames: true")
    file = fields["full"]["file"] if full else fields["file"]
    image = np.asarray(Image.open(io.BytesIO(store.read_bytes(file))).convert("RGB"))
    return untile(image, fields["count"])


AUDIO_ONLY = "audio_only"


def skip_without_video(stage: str, sample: Sample) -> bool:
    """An audio-only sample (a Freesound clip: probe found no video) has nothing for the
    frame stages: they record why they skipped it, which is not a failure, and it goes on."""
    if sample.fields.get("probe", {}).get("has_video", True):
        return False
    sample.fields[stage] = {"skipped": AUDIO_ONLY}
    return True
