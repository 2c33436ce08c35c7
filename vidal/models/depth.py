"""Monocular depth through `transformers`' depth-estimation classes, batched.

GLPN (GLPN-NYU: metric, metres), DPT (DPT-Large: relative inverse depth) and Depth Anything
(V2: relative inverse depth, or metres for its metric checkpoints) load through
`AutoModelForDepthEstimation`; `relative` says which kind a model predicts.

Inference size: frames keep their aspect ratio with the short side at `inference_size`
(default: the model's own — GLPN: the input's, Depth Anything: 518), both sides rounded to
the model's multiple (GLPN 32, ViT patch sizes), except where the model's processor resizes
to a fixed square (DPT-Large; `transformers`' DPT-ViT only takes square inputs). Frames that
share an inference shape share one forward pass: one pass for a whole batch when its clips
share an aspect ratio (short-video crawls nearly always do) or when the model is square.
Pixels are prepared in torch on the model's device, like the model's image processor does.

`input_hw` (h, w) instead resizes every frame to one fixed size first, as LanguageBind's
generation code did for GLPN-NYU (448 x 796, bicubic, full frames); the processor's rounding
to its multiple (GLPN: 32) then floors both sides, as `GLPNImageProcessor` does.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from vidal.models import tiny
from vidal.models.resolve import (
    ModelSource,
    autocast,
    load_image_processor,
    resolve,
    select_device,
    to_pixels,
    weights_digest,
)


class DepthEstimator:
    def __init__(
        self,
        bundle: tiny.Bundle,
        source: ModelSource,
        revision: str,
        device: str,
        precision: str,
        inference_size: int = 0,
        input_hw: tuple[int, int] | None = None,
        follow_orientation: bool = False,
    ):
        self.model = bundle.model.to(device).eval()
        self.input_hw = tuple(input_hw) if input_hw else None
        self.follow_orientation = follow_orientation
        self.processor = bundle.image_processor
        self.source, self.revision = source, revision
        self.device, self.precision = device, precision
        self.inference_size = int(inference_size or 0)
        self.relative = is_relative(self.model.config)
        self.multiple = _multiple(self.model.config, self.processor)
        self.fixed = _fixed_side(self.model.config, self.processor)

    @classmethod
    def load(
        cls,
        ref: str,
        precision: str = "bf16",
        inference_size: int = 0,
        device: str | None = None,
        input_hw: tuple[int, int] | None = None,
        follow_orientation: bool = False,
    ) -> DepthEstimator:
        source = resolve(ref)
        bundle = tiny.build(source.location) if source.kind == "tiny" else _from_folder(source)
        revision = source.revision or weights_digest(bundle.model)
        device = device or select_device()
        return cls(
            bundle,
            source,
            revision,
            device,
            precision,
            inference_size,
            input_hw,
            follow_orientation,
        )

    @property
    def ref(self) -> str:
        return self.source.ref

    def fixed_hw(self, height: int, width: int) -> tuple[int, int] | None:
        """The fixed (h, w) every frame is resized to first (None: keep the aspect ratio)."""
        if not self.input_hw:
            return None
        h, w = self.input_hw
        if self.follow_orientation and (height > width) != (h > w):
            return w, h  # a portrait frame gets the portrait form of the size
        return h, w

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a frame of height x width is resized to for the model."""
        fixed = self.fixed_hw(height, width)
        if fixed:  # floored to the multiple, as GLPNImageProcessor does
            m = self.multiple
            return max(m, fixed[0] // m * m), max(m, fixed[1] // m * m)
        if self.fixed:
            side = _round(self.inference_size or self.fixed, self.multiple)
            return side, side
        short = self.inference_size or _default_short(self.processor) or min(height, width)
        scale = short / min(height, width)
        return _round(height * scale, self.multiple), _round(width * scale, self.multiple)

    def predict(
        self, clips: list[np.ndarray], out_sizes: list[tuple[int, int]]
    ) -> list[np.ndarray]:
        """Raw model output, float32 (n_i, h_i, w_i), for every clip (n_i, H, W, 3) uint8,
        resized to its out size (h_i, w_i). One forward per distinct inference shape."""
        import torch

        groups = collections.defaultdict(list)
        for i, frames in enumerate(clips):
            groups[self.input_size(*frames.shape[1:3])].append(i)
        results: list[np.ndarray | None] = [None] * len(clips)
        with torch.inference_mode():
            for size, members in groups.items():
                pixels = torch.cat([self._pixels(clips[i], size) for i in members])
                depth = self.forward(pixels).float()
                parts = depth.split([len(clips[i]) for i in members])
                for i, part in zip(members, parts, strict=True):
                    results[i] = _resize(part, out_sizes[i]).cpu().numpy()
        return results

    def _pixels(self, frames: np.ndarray, size: tuple[int, int]):
        x = torch_from(frames).to(self.device)
        fixed = self.fixed_hw(*frames.shape[1:3])
        if fixed and tuple(fixed) != tuple(frames.shape[1:3]):
            x = _resize_uint8(x, fixed)
        return to_pixels(x, size, self.processor)

    def forward(self, pixels):
        """The model call: (N, 3, h, w) prepared pixels -> (N, h', w') depth."""
        with autocast(self.device, self.precision):
            return self.model(pixel_values=pixels).predicted_depth

    def save(self, folder) -> None:
        """Write model and image processor, loadable as a local reference."""
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)


def torch_from(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames))


def _resize_uint8(frames, size: tuple[int, int]):
    """(N, H, W, 3) uint8 -> (N, h, w, 3) uint8, bicubic (antialiased) like PIL's resize."""
    import torch
    import torch.nn.functional as F

    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def is_relative(config) -> bool:
    """Whether the model predicts relative (inverse) depth rather than metres."""
    kind = config.model_type
    if kind in ("glpn", "zoedepth"):
        return False
    if kind == "depth_anything":
        return getattr(config, "depth_estimation_type", "relative") != "metric"
    return True  # DPT (MiDaS-style) and anything unknown: make no claim of metres


def _multiple(config, processor) -> int:
    """Sides must be multiples of this: the processor's divisor and the ViT patch size."""
    divisor = getattr(processor, "size_divisor", None) or getattr(
        processor, "ensure_multiple_of", 1
    )
    patch = getattr(config, "patch_size", None)
    patch = patch if isinstance(patch, int) else 1
    return math.lcm(int(divisor or 1), patch)


def _fixed_side(config, processor) -> int | None:
    """The square side for models that take square inputs only (None: keep aspect)."""
    size = getattr(processor, "size", None) or {}
    side = min(size.get("height", 0), size.get("width", 0)) or size.get("shortest_edge")
    square_only = config.model_type == "dpt" and (
        getattr(config, "backbone_config", None) is None or getattr(config, "is_hybrid", False)
    )
    if square_only or getattr(processor, "keep_aspect_ratio", True) is False:
        return int(side or 384)
    return None


def _default_short(processor) -> int | None:
    size = getattr(processor, "size", None) or {}
    if "shortest_edge" in size:
        return int(size["shortest_edge"])
    if "height" in size:
        return int(min(size["height"], size["width"]))
    return None  # GLPN: the input's own size


def _round(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def _resize(depth, size: tuple[int, int]):
    """(n, h, w) -> (n, *size), bicubic like transformers' post-processing."""
    import torch.nn.functional as F

    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth[:, None], size=size, mode="bicubic", align_corners=False)[:, 0]


def _from_folder(source: ModelSource) -> tiny.Bundle:
    from transformers import AutoModelForDepthEstimation

    model = AutoModelForDepthEstimation.from_pretrained(source.location)
    return tiny.Bundle(model, load_image_processor(source.location))
