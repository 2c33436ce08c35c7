"""What LanguageBind's two layouts share: its text fields, its frames, its depth unit.

LanguageBind (PKU-YuanGroup/LanguageBind) names vidal's text views differently:

  raw            vidal `raw` (title + hashtags)
  mplug          vidal `video_caption` (the paper: mPLUG-Owl)
  polish_mplug   vidal `enhanced` (the paper: ChatGPT's polish); always begins "In the video, "
  sound_mplug    vidal `audio_caption` (the `audio_caption` stage)
  ofa            vidal `keyframe_captions`, 8 of them (the paper: OFA)

A view a sample lacks is filled with `raw` (the frame captions too) and counted, so every
annotation has every field LanguageBind's `mix` text type can draw.

Depth: LanguageBind reads metric millimetres (uint16) and divides by 1000. Relative depth
(DPT, Depth Anything: normalised inverse depth, `json.depth.relative`) has no unit, so it is
refused unless the user picks the documented conversion `near_far` (see `relative_to_mm`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vidal.io.keys import check_key

# LanguageBind's annotation names for vidal's text views
VIEW_NAMES = {"mplug": "video_caption", "polish_mplug": "enhanced", "sound_mplug": "audio_caption"}
POLISH_PREFIX = "In the video, "
NUM_FRAMES = 8
FRAME_SHORT_SIDE = 256  # LanguageBind's `resize256` frames and its webdataset's frm*.jpg
RELATIVE_REFUSED = (
    "this dataset's depth is relative (normalised inverse depth from {model}), but LanguageBind "
    "reads metric millimetres: rebuild with a metric model (GLPN-NYU) or pass "
    "--relative-depth NEAR,FAR to convert by the documented near/far rule"
)


class ExportError(ValueError):
    """The export as a whole cannot be done as asked (one sentence for the user)."""


class SampleError(Exception):
    """One sample cannot be exported (or one of its modalities); the export goes on."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def safe_key(key: object) -> str:
    """The sample key when it may name a file; a per-sample error otherwise."""
    try:
        return check_key(key)
    except ValueError as exc:
        raise SampleError("unsafe_key", str(exc)) from None


def polished(text: str) -> str:
    """`polish_mplug` as LanguageBind's webdataset loader requires: starting "In the video, "."""
    text = text.strip()
    if text.startswith(POLISH_PREFIX):
        return text
    if text[:1].isupper() and not text[1:2].isupper():  # "A dog" -> "a dog"; "NASA" stays
        text = text[0].lower() + text[1:]
    return POLISH_PREFIX + text


def annotation(meta: dict, folder: str, filled: Counter) -> dict:
    """A sample's LanguageBind annotation: {folder, raw, mplug, polish_mplug, sound_mplug, ofa}."""
    text = meta.get("text") or {}
    raw = text.get("raw") or meta.get("title", "")
    entry = {"folder": folder, "raw": raw}
    for theirs, ours in VIEW_NAMES.items():
        entry[theirs] = text.get(ours) or raw
        filled[theirs] += not text.get(ours)
    entry["polish_mplug"] = polished(entry["polish_mplug"])
    captions = [c for c in (text.get("keyframe_captions") or []) if isinstance(c, str)]
    entry["ofa"] = [captions[k] if k < len(captions) else raw for k in range(NUM_FRAMES)]
    filled["ofa"] += len(captions) < NUM_FRAMES
    return entry


def untile(png: bytes, count: int) -> list[np.ndarray]:
    """The frames of a tiled member (frame k at columns k*W..(k+1)*W)."""
    image = np.asarray(Image.open(io.BytesIO(png)))
    if count < 1 or image.ndim < 2 or image.shape[1] % count:
        raise SampleError("bad_tiles", f"width {image.shape[1]} is not {count} frames")
    return list(np.split(image, count, axis=1))


def eight(frames: list[np.ndarray]) -> list[np.ndarray]:
    """LanguageBind reads frames 0..7: a sample with another count is resampled uniformly."""
    picks = np.linspace(0, len(frames) - 1, NUM_FRAMES, dtype=int)
    return [frames[i] for i in picks]


def exact_short_side(image: Image.Image, side: int = FRAME_SHORT_SIDE) -> Image.Image:
    """`image` resized (bicubic) so its short side is exactly `side`, up or down."""
    width, height = image.size
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def depth_mm(png: bytes, meta: dict, near_far: tuple[float, float] | None) -> list[np.ndarray]:
    """8 depth frames in uint16 millimetres, from a sample's KEY.depth.png."""
    depth = meta.get("depth") or {}
    frames = eight(untile(png, (meta.get("frames") or {}).get("count") or NUM_FRAMES))
    if not depth.get("relative"):
        if frames[0].dtype != np.uint16:
            raise SampleError("bad_depth", f"depth PNG is {frames[0].dtype}, not uint16 mm")
        return frames
    if near_far is None:
        raise ExportError(RELATIVE_REFUSED.format(model=depth.get("model") or "a relative model"))
    return [relative_to_mm(f, *near_far) for f in frames]


def refuse_relative_depth(shards: list[str]) -> None:
    """ExportError when the dataset's depth is relative; the first sample with depth tells
    (one depth model makes a build's depth), so nothing has been written yet. Only the first
    shard is read: should it hold no depth, a relative map later stops the export there."""
    import webdataset as wds

    for sample in wds.WebDataset(shards[:1], shardshuffle=False, empty_check=False):
        try:
            depth = json.loads(sample["json"]).get("depth") or {}
        except (KeyError, ValueError, AttributeError):
            continue
        if "depth.png" in sample and "relative" in depth:
            if depth["relative"]:
                model = depth.get("model") or "a relative model"
                raise ExportError(RELATIVE_REFUSED.format(model=model))
            return


def relative_to_mm(values: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """The documented conversion of relative depth: the stored normalised inverse depth
    v in [0, 1] (1 = the clip's nearest point) is taken as affine in true inverse depth, with
    the clip's nearest point at NEAR and its farthest at FAR metres:
        depth_m = 1 / (1/FAR + v * (1/NEAR - 1/FAR))
    A guess of scale per clip, not a measurement; the export report says it was applied."""
    v = values.astype(np.float64) / 65535.0
    metres = 1.0 / (1.0 / far_m + v * (1.0 / near_m - 1.0 / far_m))
    return np.rint(np.clip(metres, 0.0, 65.535) * 1000.0).astype(np.uint16)


def parse_near_far(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        near, far = (float(x) for x in text.split(","))
    except ValueError:
        raise ExportError(f"--relative-depth takes NEAR,FAR in metres, got {text!r}") from None
    if not 0 < near < far <= 65.535:
        raise ExportError(f"--relative-depth needs 0 < NEAR < FAR <= 65.5 m, got {text!r}")
    return near, far


def thermal_rgb(frame: np.ndarray) -> Image.Image:
    """An infrared frame as the 3-channel image LanguageBind normalises per RGB channel."""
    return Image.fromarray(frame).convert("L").convert("RGB")


# -- atomic files -----------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class FrameFolder:
    """A folder of frames that appears whole or not at all: written under a hidden temp
    name, then renamed over any earlier export of the same sample."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)


class AnnotationFile:
    """A `{id: entry}` JSON object streamed to a temp file and renamed when complete, so a
    10M-sample export never holds the annotations in memory."""

    def __init__(self, path: Path):
        self.path, self.count = path, 0
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.file.write("{")

    def add(self, key: str, entry: dict) -> None:
        self.file.write(("," if self.count else "") + "\n" + json.dumps(key) + ": ")
        self.file.write(json.dumps(entry, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self.file.write("\n}\n")
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)
