"""infrared: an RGB -> thermal translation of every keyframe, one 8-bit grayscale PNG per sample.

The paper's recipe is the default: sRGB-TIR's MUNIT generator (weights trained on GTA RGB ->
STheReO thermal; `model` is the local path of its `translation_weights.pt`), frames fed at
short side 400 (LanguageBind: 400x640), output (x + 1) / 2 averaged to one channel. A
translator trained with `vidal train-infrared` (pix2pix.pt) loads the same way.

Frames are the keyframes' own size, shrunk to `output_short_side` when larger (like depth),
tiled side by side exactly like the keyframes (frame k at columns k*W .. (k+1)*W), so the
packer writes them as KEY.ir.png. MUNIT samples a style code per clip: its seed is a hash of
the sample key and `seed`, recorded as `style_seed`, so reruns give the same frames.

The paper-exact pipeline (vidal10m.yaml) follows LanguageBind's `thermal_ddp.py` instead: the
full frames (`frames: full`) resized to `input_hw` 400 x 640, a style drawn per frame
(`style: per_frame`, from the same seed), each output frame min-max normalised on its own
(`normalize: minmax`, as `save_image(normalize=True)`) and kept as 3 channels (`channels: 3`,
an RGB PNG in the tar; `vidal export languagebind` writes the JPEGs LanguageBind stored).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vidal.media.frames import scaled_size
from vidal.models.infrared import check_infrared_reference, seed_for
from vidal.models.resolve import PRECISIONS
from vidal.sample import Sample
from vidal.stages.base import payload_path
from vidal.stages.depth import check_frame_params, keyframe_hw
from vidal.stages.keyframe_model import KeyframeModelStage
from vidal.stages.keyframes import tile
from vidal.stages.outputs import Member, Outputs, Public
from vidal.stages.registry import register


@register
@dataclass
class InfraredStage(KeyframeModelStage):
    name = "infrared"
    outputs = Outputs(
        members=(Member("ir.png", "image/png", "uint8", frames=True, preview="tiles"),),
        public=Public(),
        reads={"keyframes": ("file", "count")},
    )

    model: str = "srgb-tir/translation_weights.pt"
    inference_size: int = 0  # short side at inference; 0: 400 (LanguageBind fed 400x640)
    output_short_side: int = 256  # frames are the keyframes' size, shrunk to this when larger
    seed: int = 0  # style seeds are hash(seed, key)
    precision: str = "bf16"
    frames: str = "keyframes"  # keyframes | full (keyframes.full_frames: the frames at full size)
    input_hw: list[int] = field(default_factory=list)  # [h, w]: one fixed model input size
    follow_orientation: bool = False  # input_hw as [w, h] for portrait frames
    style: str = "per_clip"  # per_clip | per_frame (MUNIT style codes)
    normalize: str = "fixed"  # fixed: (x + 1) / 2 | minmax: each frame to its own 0..255
    channels: int = 1  # 1: grayscale | 3: the generator's 3 channels
    batch_size: int = 8

    def check(self) -> str | None:
        problem = check_infrared_reference(self.model)
        if problem:
            return f"infrared.model: {problem}"
        if self.precision not in PRECISIONS:
            return f"infrared.precision must be one of {PRECISIONS}, got {self.precision!r}"
        if self.output_short_side < 1 or self.inference_size < 0:
            return "infrared.output_short_side must be >= 1 and infrared.inference_size >= 0"
        if self.style not in ("per_clip", "per_frame"):
            return f"infrared.style must be 'per_clip' or 'per_frame', got {self.style!r}"
        if self.normalize not in ("fixed", "minmax") or self.channels not in (1, 3):
            return "infrared.normalize must be fixed|minmax and infrared.channels 1|3"
        return check_frame_params(self.name, self.frames, self.input_hw)

    def load_model(self):
        from vidal.models.infrared import InfraredTranslator

        return InfraredTranslator.load(
            self.model,
            self.precision,
            self.inference_size,
            input_hw=tuple(self.input_hw) or None,
            follow_orientation=self.follow_orientation,
        )

    def infer(self, items: list[tuple[Sample, np.ndarray]]) -> None:
        sizes = [self.out_size(*keyframe_hw(sample)) for sample, _ in items]
        seeds = [seed_for(sample.key, self.seed) for sample, _ in items]
        outs = self.net.translate(
            [frames for _, frames in items],
            sizes,
            seeds,
            per_frame_style=self.style == "per_frame",
            normalize=self.normalize,
            channels=self.channels,
        )
        for (sample, frames), seed, ir in zip(items, seeds, outs, strict=True):
            self.results[sample.key] = (frames, seed, ir)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) with the short side at output_short_side; never upscaled."""
        new_width, new_height = scaled_size(width, height, self.output_short_side)
        return new_height, new_width

    def process(self, sample: Sample) -> None:
        frames, seed, ir = self.results.pop(sample.key)
        rel = payload_path(self.name, sample, ".png")
        self.store.write_bytes(rel, encode_png(tile(ir)))
        sample.fields[self.name] = {
            "file": rel,
            "model": self.net.ref,
            "revision": self.net.revision,
            "kind": self.net.kind,
            "style_seed": seed if self.net.kind == "munit" else None,
            "count": int(ir.shape[0]),
            "height": int(ir.shape[1]),
            "width": int(ir.shape[2]),
            "inference_size": list(self.net.input_size(*frames.shape[1:3])),
            "input_frames": [int(frames.shape[1]), int(frames.shape[2])],
            "style": self.style if self.net.kind == "munit" else None,
            "normalize": self.normalize,
            "channels": self.channels,
        }


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 array as an 8-bit PNG: grayscale (H, W) or RGB (H, W, 3)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def load_infrared(store, fields: dict, rgb: bool = False) -> np.ndarray:
    """The stored infrared frames of a sample as (N, H, W) uint8 (`rgb`: (N, H, W, 3))."""
    image = Image.open(io.BytesIO(store.read_bytes(fields["file"])))
    image = np.asarray(image.convert("RGB" if rgb else "L"))
    return np.stack(np.split(image, fields["count"], axis=1))
