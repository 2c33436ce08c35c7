"""RGB -> thermal translators behind one loader, batched.

A reference is one of:
  - a MUNIT checkpoint in sRGB-TIR's layout (`translation_weights.pt`, `{"a", "b"}`; a
    folder holding one works too): RGB is encoded by `b`'s content encoder and decoded by
    `a`'s decoder with a style code from N(0, 1) (sRGB-TIR's generator config);
  - a `vidal train-infrared` checkpoint (`pix2pix.pt`, or its folder);
  - `tiny:munit` (MUNIT with dim 8, mlp_dim 16, one residual block) or `tiny:pix2pix`,
    randomly initialised from a fixed seed, for tests and the demo.

Frames are resized (antialiased bilinear) so the short side is `inference_size` (default
400: LanguageBind fed sRGB-TIR 400x640 frames), both sides rounded to the model's multiple,
translated in [-1, 1], mapped to [0, 1] by (x + 1) / 2, averaged over channels (grayscale),
resized to the requested output size and stored as uint8. Each clip gets one style code, drawn
from its own seed, so a clip's frames share a style and reruns are identical.

LanguageBind's generation code (`thermal_ddp.py`) differs, and `translate`'s options follow it
for the paper-exact pipeline: frames resized to one fixed size (`input_hw`, 400 x 640), a style
drawn per frame (`per_frame_style`, still from the clip's seed, so reruns are identical), the
output min-max normalised per frame (`normalize="minmax"`, torchvision's
`save_image(normalize=True)` on one frame) and kept as 3 channels (`channels=3`).
"""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path

import numpy as np

from vidal.models.resolve import ModelNotFoundError, autocast, select_device, weights_digest

TINY_REFS = ("tiny:munit", "tiny:pix2pix")
MUNIT_FILE, PIX2PIX_FILE = "translation_weights.pt", "pix2pix.pt"
DEFAULT_SHORT_SIDE = 400
_HOW = (
    "an infrared model is a MUNIT checkpoint in sRGB-TIR's layout (translation_weights.pt, "
    "download it from sRGB-TIR's release), a `vidal train-infrared` checkpoint (pix2pix.pt), "
    "a folder holding one of them, or tiny:munit / tiny:pix2pix"
)


def check_infrared_reference(ref: str) -> str | None:
    """A problem with the reference's form (None when fine); no file access."""
    if not isinstance(ref, str) or not ref.strip():
        return f"empty model reference; {_HOW}"
    if ref.startswith("tiny:"):
        return None if ref in TINY_REFS else f"unknown tiny model {ref!r}; {_HOW}"
    return None  # a path: whether it exists is checked when the model loads


def seed_for(key: str, seed: int) -> int:
    """A sample's style seed: a hash of the config seed and the sample key (31 bits)."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _locate(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_dir():
        for name in (MUNIT_FILE, PIX2PIX_FILE):
            if (path / name).is_file():
                return path / name
        raise ModelNotFoundError(f"folder {ref!r} holds no {MUNIT_FILE} or {PIX2PIX_FILE}; {_HOW}")
    if not path.is_file():
        raise ModelNotFoundError(f"infrared model {ref!r} does not exist; {_HOW}")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


class InfraredTranslator:
    """`kind` munit | pix2pix; `translate` makes the uint8 thermal frames of many clips."""

    def __init__(
        self, kind, nets, ref, revision, device, precision, inference_size=0, input_hw=None
    ):
        self.kind, self.ref, self.revision = kind, ref, revision
        self.input_hw = tuple(input_hw) if input_hw else None
        self.follow_orientation = False
        self.device, self.precision = device, precision
        self.inference_size = int(inference_size or 0)
        self.nets = [n.to(device).eval() for n in nets]
        if kind == "munit":
            self.multiple = 2 ** sum(
                1 for m in self.nets[0].dec.model if m.__class__.__name__ == "Upsample"
            )
            self.style_dim = self.nets[0].style_dim
        else:
            self.multiple, self.style_dim = self.nets[0].multiple, 0

    @classmethod
    def load(
        cls,
        ref: str,
        precision: str = "bf16",
        inference_size: int = 0,
        device=None,
        input_hw=None,
        follow_orientation: bool = False,
    ):
        net = cls._load(ref, precision, inference_size, device, input_hw)
        net.follow_orientation = follow_orientation
        return net

    @classmethod
    def _load(cls, ref, precision, inference_size, device, input_hw):
        import torch

        from vidal.models import munit, pix2pix

        problem = check_infrared_reference(ref)
        if problem:
            raise ModelNotFoundError(problem)
        device = device or select_device()
        if ref in TINY_REFS:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                if ref == "tiny:munit":
                    nets = [munit.AdaINGen(3, munit.TINY), munit.AdaINGen(3, munit.TINY)]
                    kind = "munit"
                else:
                    nets, kind = [pix2pix.build_generator(pix2pix.TINY)], "pix2pix"
            revision = weights_digest(torch.nn.ModuleList(nets))
            return cls(kind, nets, ref, revision, device, precision, inference_size, input_hw)
        path = _locate(ref)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if pix2pix.is_checkpoint(ckpt):
            nets, kind = [pix2pix.load_checkpoint(path)], "pix2pix"
        else:
            nets, kind = list(munit.load_translation_weights(path)), "munit"
        digest = _file_digest(path)
        return cls(kind, nets, ref, digest, device, precision, inference_size, input_hw)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) a frame is translated at: short side `inference_size` (or the fixed
        `input_hw`), model multiples."""
        if self.input_hw:
            h, w = self.input_hw
            if self.follow_orientation and (height > width) != (h > w):
                h, w = w, h
            m = self.multiple
            return max(m, round(h / m) * m), max(m, round(w / m) * m)
        short = self.inference_size or DEFAULT_SHORT_SIDE
        scale = short / min(height, width)
        m = self.multiple
        return max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m)

    def styles(self, seed: int, frames: int = 1, per_frame: bool = False):
        """Style codes (frames, style_dim, 1, 1) from N(0, 1), drawn from the clip's seed: one
        shared by every frame, or (`per_frame`) one per frame."""
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        if per_frame:
            return torch.randn(frames, self.style_dim, 1, 1, generator=gen)
        return torch.randn(1, self.style_dim, 1, 1, generator=gen).expand(frames, -1, -1, -1)

    def translate(
        self,
        clips: list[np.ndarray],
        out_sizes: list[tuple[int, int]],
        seeds: list[int],
        per_frame_style: bool = False,
        normalize: str = "fixed",
        channels: int = 1,
    ) -> list[np.ndarray]:
        """uint8 (n_i, h_i, w_i) thermal frames — (n_i, h_i, w_i, 3) with `channels=3` — for
        every clip (n_i, H, W, 3) uint8. `normalize`: fixed ((x + 1) / 2) or minmax (per frame).
        One forward per distinct inference shape."""
        import torch

        groups = collections.defaultdict(list)
        for i, frames in enumerate(clips):
            groups[self.input_size(*frames.shape[1:3])].append(i)
        results: list[np.ndarray | None] = [None] * len(clips)
        with torch.inference_mode():
            for size, members in groups.items():
                x = torch.cat([_pixels(clips[i], size, self.device) for i in members])
                styles = None
                if self.kind == "munit":
                    styles = torch.cat(
                        [self.styles(seeds[i], len(clips[i]), per_frame_style) for i in members]
                    ).to(self.device)
                y = self.forward(x, styles).float()
                parts = y.split([len(clips[i]) for i in members])
                for i, part in zip(members, parts, strict=True):
                    results[i] = to_uint8(part, out_sizes[i], normalize, channels)
        return results

    def forward(self, x, styles=None):
        """[-1, 1] RGB (N, 3, h, w) -> [-1, 1] thermal (N, C, h, w)."""
        from vidal.models.munit import rgb_to_thermal

        with autocast(self.device, self.precision):
            if self.kind == "munit":
                return rgb_to_thermal(self.nets[0], self.nets[1], x, styles)
            return self.nets[0](x)


def _pixels(frames: np.ndarray, size: tuple[int, int], device: str):
    import torch
    import torch.nn.functional as F

    x = (
        torch.from_numpy(np.require(frames, requirements=["C", "W"]))
        .to(device)
        .permute(0, 3, 1, 2)
        .float()
    )
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x / 127.5 - 1.0).clamp(-1, 1)


def to_uint8(y, size: tuple[int, int], normalize: str = "fixed", channels: int = 1) -> np.ndarray:
    """[-1, 1] (N, C, h, w) model output -> uint8 (N, *size) (or (N, *size, 3) for 3 channels).

    fixed: (y + 1) / 2; minmax: each frame's own min and max to 0 and 1, all channels together
    (torchvision's `save_image(normalize=True)` of one frame)."""
    import torch.nn.functional as F

    if normalize == "minmax":
        lo = y.amin(dim=(1, 2, 3), keepdim=True)
        hi = y.amax(dim=(1, 2, 3), keepdim=True)
        y = (y - lo) / (hi - lo).clamp_min(1e-5)
    else:
        y = (y + 1) / 2
    y = y.mean(dim=1, keepdim=True) if channels == 1 else y.expand(-1, 3, -1, -1)
    if tuple(y.shape[-2:]) != tuple(size):
        y = F.interpolate(y, size=size, mode="bilinear", antialias=True, align_corners=False)
    out = (y.clamp(0, 1) * 255).round().to(dtype=_uint8()).cpu()
    return out[:, 0].numpy() if channels == 1 else out.permute(0, 2, 3, 1).numpy()


def _uint8():
    import torch

    return torch.uint8
