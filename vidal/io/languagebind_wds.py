"""`vidal export languagebind-wds`: webdataset shards in the member layout LanguageBind's own
webdataset loader reads (`data/new_loadvat.py` at 7070c53). Per sample, sharing the key:

  KEY.raw.txt  KEY.mplug.txt  KEY.polish_mplug.txt  text (polish_mplug begins "In the video, ")
  KEY.ofa0.txt ... KEY.ofa7.txt      the 8 frame captions
  KEY.frm0.jpg ... KEY.frm7.jpg      8 RGB frames of the clip, short side exactly 256
  KEY.tml0.jpg                       infrared frame 0, 3-channel JPEG (with infrared)
  KEY.dep0.npy                       depth frame 0, a uint16 numpy array in mm (with depth)

One output shard per input shard: DEST/languagebind-NNNNN.tar, written under a temp name and
renamed when complete. `require` leaves out samples lacking a modality (`depth`, `thermal`), for
a loader that expects every member. Views a sample lacks are filled with `raw`, as in the
folder export; relative depth is refused (or converted) by the same rule.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vidal.io import languagebind as lb
from vidal.media.ffmpeg import MediaError
from vidal.media.frames import sample_keyframes

OPTIONAL = {"depth": "dep0.npy", "thermal": "tml0.jpg"}


def export_languagebind_wds(
    shards: list[str],
    dest: str | Path,
    require: tuple[str, ...] = (),
    relative_depth: str | None = None,
) -> dict:
    unknown = [m for m in require if m not in OPTIONAL]
    if unknown:
        raise lb.ExportError(f"--require takes {', '.join(OPTIONAL)}, got {unknown[0]!r}")
    near_far = lb.parse_near_far(relative_depth)
    if near_far is None:
        lb.refuse_relative_depth(shards)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    counts, filled, errors = Counter(), Counter(), Counter()
    for index, shard in enumerate(shards):
        out = dest / f"languagebind-{index:05d}.tar"
        _write_shard(shard, out, require, near_far, (counts, filled, errors))
        counts["shards"] += 1
    return {
        "dest": str(dest),
        **counts,
        "views_filled_with_raw": dict(filled),
        "errors_by_reason": dict(errors),
    }


def _write_shard(shard: str, out: Path, require, near_far, tallies) -> None:
    import webdataset as wds

    counts, filled, errors = tallies
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with wds.TarWriter(str(tmp)) as writer:
            for sample in wds.WebDataset([shard], shardshuffle=False, empty_check=False):
                try:
                    members = sample_members(sample, near_far, filled)
                except (lb.SampleError, MediaError) as exc:
                    errors[getattr(exc, "reason", "error")] += 1
                    continue
                missing = [m for m in require if OPTIONAL[m] not in members]
                if missing:
                    counts[f"left_out_no_{missing[0]}"] += 1
                    continue
                writer.write(members)
                counts["samples"] += 1
                counts.update(m for m, name in OPTIONAL.items() if name in members)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def sample_members(sample: dict, near_far, filled: Counter) -> dict:
    """One sample's members in new_loadvat.py's names (bytes each)."""
    key = lb.safe_key(sample.get("__key__"))
    try:
        meta = json.loads(sample["json"])
        mp4 = sample["mp4"]
    except (KeyError, ValueError) as exc:
        raise lb.SampleError("incomplete", f"{type(exc).__name__}: {exc}") from None
    entry = lb.annotation(meta, "", filled)
    members = {"__key__": key}
    for name in ("raw", "mplug", "polish_mplug"):
        members[f"{name}.txt"] = entry[name].encode("utf-8")
    for k, caption in enumerate(entry["ofa"]):
        members[f"ofa{k}.txt"] = caption.encode("utf-8")
    for k, frame in enumerate(clip_frames(mp4)):
        members[f"frm{k}.jpg"] = _jpeg(lb.exact_short_side(Image.fromarray(frame)))
    count = (meta.get("frames") or {}).get("count") or lb.NUM_FRAMES
    if "ir.png" in sample:
        members["tml0.jpg"] = _jpeg(lb.thermal_rgb(lb.eight(lb.untile(sample["ir.png"], count))[0]))
    if "depth.png" in sample:
        members["dep0.npy"] = _npy(lb.depth_mm(sample["depth.png"], meta, near_far)[0])
    return members


def clip_frames(mp4: bytes) -> list[np.ndarray]:
    """LanguageBind's 8 frames of a clip (uniform indices), decoded by vidal.media."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:
        tmp.write(mp4)
        tmp.flush()
        frames = sample_keyframes(tmp.name, lb.NUM_FRAMES, "exact", None, backend="pyav").frames
    return lb.eight(list(frames))


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.uint16), allow_pickle=False)
    return buf.getvalue()
