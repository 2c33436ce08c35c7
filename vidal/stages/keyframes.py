"""keyframes: N uniformly spaced frames by seeking, stored tiled side by side in one image.

Every per-frame modality (depth, infrared, keyframe captions) uses these frame indices, so
frame k of each modality shows the same moment.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from vidal.media.frames import sample_keyframes
from vidal.sample import Sample
from vidal.stages.base import MediaStage, payload_path
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
        public=Public("frames", fields=("indices", "timestamps", "count", "width", "height")),
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
    batch_size: int = 8

    def check(self) -> str | None:
        if self.mode not in ("exact", "snap"):
            return f"keyframes.mode must be 'exact' or 'snap', got {self.mode!r}"
        return None

    def process(self, sample: Sample) -> None:
        info = sample.fields["probe"]
        with self.media(sample) as path:
            kf = sample_keyframes(
                path,
                self.num_frames,
                self.mode,
                self.short_side,
                self.backend,
                source_size=(info["width"], info["height"]),
                # the clip and audio are cut to the probed duration: so are the frames
                max_seconds=info.get("duration") or None,
            )
        rel = payload_path(self.name, sample, f".{self.image_format}")
        self.store.write_bytes(rel, self._encode(tile(kf.frames)))
        sample.fields[self.name] = {
            "file": rel,
            "indices": kf.indices,
            "timestamps": kf.timestamps,
            "width": int(kf.frames.shape[2]),
            "height": int(kf.frames.shape[1]),
            "count": len(kf),
            "backend": kf.backend,
        }

    def _encode(self, image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        if self.image_format == "png":
            Image.fromarray(image).save(buf, format="PNG", compress_level=3)
        else:
            Image.fromarray(image).save(buf, format="JPEG", quality=self.jpeg_quality)
        return buf.getvalue()


def load_keyframes(store, fields: dict) -> np.ndarray:
    """The stored keyframes of a sample as (N, H, W, 3) uint8."""
    image = np.asarray(Image.open(io.BytesIO(store.read_bytes(fields["file"]))).convert("RGB"))
    return untile(image, fields["count"])
