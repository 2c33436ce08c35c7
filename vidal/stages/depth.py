"""depth: a depth map per keyframe, stored lossless as one 16-bit PNG per sample.

The paper's recipe is the default: GLPN-NYU on the 8 keyframes, each map resized to the
keyframe's own size (short side 256 in the paper's settings; never larger than the keyframes,
so the tiles share their W x H), clipped to 0-10 m and stored as uint16 millimetres, tiled
side by side exactly like the keyframes (frame k at columns k*W .. (k+1)*W), so the packer
writes it as KEY.depth.png.

Relative models (DPT-Large, Depth Anything V2 relative) predict inverse depth with no unit.
Their maps are stored as the sample's inverse depth min-max normalised over all its frames
(one scale per clip, so frames stay comparable) into the full uint16 range, with
`relative: true`, `encoding: "inverse_depth_minmax"` and `scale: [lo, hi]`, the model
values that 0 and 65535 stand for: value = lo + png / 65535 * (hi - lo).

The paper-exact pipeline (vidal10m.yaml) follows LanguageBind's generation code instead of the
keyframes: GLPN-NYU on the *full* frames (`frames: full`, from `keyframes.full_frames`) resized
to `input_hw` 448 x 796, in fp32, the maps resized bicubic back to the keyframes' size.

Sanity checks make per-sample errors: non-finite output (`depth_nan`), and a constant map
(`depth_constant`) unless the keyframe itself is a flat image (a black fade-in frame has no
depth to find) — and always when every map of the sample is constant.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from vidal.media.ffmpeg import MediaError
from vidal.media.frames import scaled_size
from vidal.sample import Sample
from vidal.stages.base import payload_path
from vidal.stages.keyframe_model import KeyframeModelStage
from vidal.stages.keyframes import tile
from vidal.stages.outputs import Column, Histogram, Member, Outputs, Public
from vidal.stages.registry import register

log = logging.getLogger(__name__)

U16 = 65535
METRIC, RELATIVE = "mm", "inverse_depth_minmax"


DEPTH_HISTOGRAM = Histogram("depth per clip (kept): min blue, max orange", "metres", 0.001)


@register
@dataclass
class DepthStage(KeyframeModelStage):
    name = "depth"
    outputs = Outputs(
        members=(Member("depth.png", "image/png", "uint16", frames=True, preview="depth"),),
        columns=(
            Column("depth_min_mm", pa.float64(), "min_mm", DEPTH_HISTOGRAM),
            Column("depth_max_mm", pa.float64(), "max_mm", DEPTH_HISTOGRAM),
        ),
        public=Public(),
        reads={"keyframes": ("file", "count")},
    )

    model: str = "vinvino02/glpn-nyu"
    inference_size: int = 0  # short side at inference (square side for square models); 0: model's
    output_short_side: int = 256  # maps are the keyframes' size, shrunk to this when larger
    max_depth_m: float = 10.0  # metric depth is clipped to [0, max_depth_m], stored in mm
    precision: str = "bf16"  # autocast on GPU: bf16 | fp16 | fp32
    frames: str = "keyframes"  # keyframes | full (keyframes.full_frames: the frames at full size)
    input_hw: list[int] = field(default_factory=list)  # [h, w]: one fixed model input size
    follow_orientation: bool = False  # input_hw as [w, h] for portrait frames
    batch_size: int = 8

    def check(self) -> str | None:
        problem = super().check()
        if problem:
            return problem
        if not 0 < self.max_depth_m * 1000 <= U16:
            return f"depth.max_depth_m must be in (0, 65.535] (uint16 mm), got {self.max_depth_m}"
        if self.output_short_side < 1 or self.inference_size < 0:
            return "depth.output_short_side must be >= 1 and depth.inference_size >= 0"
        return check_frame_params(self.name, self.frames, self.input_hw)

    def load_model(self):
        from vidal.models.depth import DepthEstimator

        return DepthEstimator.load(
            self.model,
            self.precision,
            self.inference_size,
            input_hw=tuple(self.input_hw) or None,
            follow_orientation=self.follow_orientation,
        )

    def infer(self, items: list[tuple[Sample, np.ndarray]]) -> None:
        """One batched prediction for the frames of every sample, then encode each."""
        sizes = [self.out_size(*keyframe_hw(sample)) for sample, _ in items]
        maps = self.net.predict([frames for _, frames in items], sizes)
        for (sample, frames), depth in zip(items, maps, strict=True):
            self.results[sample.key] = (frames, depth)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) with the short side at output_short_side; never upscaled."""
        new_width, new_height = scaled_size(width, height, self.output_short_side)
        return new_height, new_width

    def process(self, sample: Sample) -> None:
        frames, depth = self.results.pop(sample.key)
        check_maps(depth, frames)
        if self.net.relative:
            values, extra = encode_relative(depth)
        else:
            values, extra = encode_metric(depth, self.max_depth_m)
        rel = payload_path(self.name, sample, ".png")
        self.store.write_bytes(rel, encode_png(tile(values)))
        sample.fields[self.name] = {
            "file": rel,
            "model": self.net.ref,
            "revision": self.net.revision,
            "relative": self.net.relative,
            "count": int(values.shape[0]),
            "height": int(values.shape[1]),
            "width": int(values.shape[2]),
            "inference_size": list(self.net.input_size(*frames.shape[1:3])),
            "input_frames": [int(frames.shape[1]), int(frames.shape[2])],
            **extra,
        }


def keyframe_hw(sample: Sample) -> tuple[int, int]:
    """(height, width) of the sample's keyframes: the per-frame outputs' size before shrinking
    (also when the model read the full-size frames)."""
    fields = sample.fields["keyframes"]
    return int(fields["height"]), int(fields["width"])


def check_frame_params(stage: str, frames: str, input_hw: list[int]) -> str | None:
    if frames not in ("keyframes", "full"):
        return f"{stage}.frames must be 'keyframes' or 'full', got {frames!r}"
    if input_hw and (len(input_hw) != 2 or min(input_hw) < 1):
        return f"{stage}.input_hw must be [height, width], got {input_hw}"
    return None


def check_maps(depth: np.ndarray, frames: np.ndarray) -> None:
    """Raise a per-sample error for non-finite or (unexplained) constant depth maps."""
    bad = ~np.isfinite(depth).all(axis=(1, 2))
    if bad.any():
        where = np.flatnonzero(bad).tolist()
        raise MediaError("depth_nan", f"non-finite depth in frame(s) {where}")
    lo, hi = depth.min(axis=(1, 2)), depth.max(axis=(1, 2))
    # constant up to resampling noise: under 0.01% of the map's magnitude (< 1 mm at 10 m)
    flat = (hi - lo) <= 1e-4 * np.maximum(np.abs(lo), np.abs(hi))
    if flat.all():
        raise MediaError("depth_constant", "every depth map of the sample is constant")
    blank = frames.reshape(len(frames), -1).std(axis=1) < 1.0  # a flat image has no depth cues
    unexplained = flat & ~blank
    if unexplained.any():
        where = np.flatnonzero(unexplained).tolist()
        raise MediaError("depth_constant", f"constant depth map for image frame(s) {where}")


def encode_metric(depth_m: np.ndarray, max_depth_m: float) -> tuple[np.ndarray, dict]:
    """Metres -> uint16 millimetres, clipped to [0, max_depth_m]."""
    mm = np.rint(np.clip(depth_m, 0.0, max_depth_m) * 1000.0).astype(np.uint16)
    return mm, {
        "encoding": METRIC,
        "min_mm": int(mm.min()),
        "max_mm": int(mm.max()),
        "clip_mm": [0, int(round(max_depth_m * 1000))],
    }


def encode_relative(inverse: np.ndarray) -> tuple[np.ndarray, dict]:
    """Relative inverse depth -> uint16 0..65535, min-max over the sample's frames."""
    lo, hi = float(inverse.min()), float(inverse.max())
    scaled = (inverse.astype(np.float64) - lo) / (hi - lo)  # hi > lo: check_maps ran first
    values = np.rint(scaled * U16).astype(np.uint16)
    return values, {"encoding": RELATIVE, "min_mm": None, "max_mm": None, "scale": [lo, hi]}


def encode_png(image: np.ndarray) -> bytes:
    """A 2-D uint16 array as a lossless 16-bit grayscale PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def load_depth(store, fields: dict) -> np.ndarray:
    """The stored depth maps of a sample as (N, H, W) uint16 (mm for metric models)."""
    image = np.asarray(Image.open(io.BytesIO(store.read_bytes(fields["file"]))))
    return np.stack(np.split(image, fields["count"], axis=1))
