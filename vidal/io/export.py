"""`vidal export languagebind`: a vidal dataset in LanguageBind's own training layout.

  DEST/annotations.json                 {id: {folder, raw, mplug, polish_mplug, sound_mplug, ofa}}
  DEST/FOLDER/ID.mp4                    the clip
  DEST/FOLDER/ID_depth_f8glpn_folder/K.png   depth frame K (K = 0..7), uint16 millimetres
  DEST/FOLDER/ID_thermal_folder/K.jpg       infrared frame K, 8-bit gray as RGB
  DEST/FOLDER_ffmpeg_mp3/ID.mp3         the audio (LanguageBind's audio loader reads mp3)

LanguageBind's VAT_dataset reads exactly these paths (`data_root/folder/...`); a text view the
dataset lacks is filled with `raw` and counted in the export report.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vidal.media.container import ffmpeg_input
from vidal.media.ffmpeg import run_ffmpeg

# LanguageBind's annotation names for vidal's text views
VIEW_NAMES = {"mplug": "video_caption", "polish_mplug": "enhanced", "sound_mplug": "audio_caption"}


def _untile(png: bytes, count: int) -> list[np.ndarray]:
    image = np.asarray(Image.open(io.BytesIO(png)))
    return list(np.split(image, count, axis=1))


def _write_frames(png: bytes, count: int, folder: Path, suffix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(_untile(png, count)):
        image = Image.fromarray(frame)
        if suffix == ".jpg":  # 3 channels: LanguageBind normalises with RGB mean / std
            image.convert("L").convert("RGB").save(folder / f"{k}.jpg", quality=95)
        else:
            image.save(folder / f"{k}.png")  # uint16 stays uint16 (mode I;16)


def annotation(meta: dict, folder: str, filled: Counter) -> dict:
    text = meta.get("text", {})
    raw = text.get("raw") or meta.get("title", "")
    entry = {"folder": folder, "raw": raw}
    for theirs, ours in VIEW_NAMES.items():
        entry[theirs] = text.get(ours) or raw
        filled[theirs] += not text.get(ours)
    count = meta.get("frames", {}).get("count") or 8
    captions = text.get("keyframe_captions") or []
    entry["ofa"] = [captions[k] if k < len(captions) else raw for k in range(count)]
    filled["ofa"] += len(captions) < count
    return entry


def export_languagebind(shards: list[str], dest: str | Path, folder: str = "vidal") -> dict:
    import webdataset as wds

    dest = Path(dest)
    (dest / folder).mkdir(parents=True, exist_ok=True)
    annotations, filled, counts = {}, Counter(), Counter()
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        key, meta = sample["__key__"], json.loads(sample["json"])
        count = meta.get("frames", {}).get("count") or 8
        _write_bytes(dest / folder / f"{key}.mp4", sample["mp4"])
        if "depth.png" in sample:
            _write_frames(
                sample["depth.png"], count, dest / folder / f"{key}_depth_f8glpn_folder", ".png"
            )
            counts["depth"] += 1
        if "ir.png" in sample:
            _write_frames(sample["ir.png"], count, dest / folder / f"{key}_thermal_folder", ".jpg")
            counts["thermal"] += 1
        if "flac" in sample:
            _flac_to_mp3(sample["flac"], dest / f"{folder}_ffmpeg_mp3" / f"{key}.mp3")
            counts["audio"] += 1
        annotations[key] = annotation(meta, folder, filled)
        counts["samples"] += 1
    _write_bytes(dest / "annotations.json", json.dumps(annotations, ensure_ascii=False).encode())
    return {"dest": str(dest), **counts, "views_filled_with_raw": dict(filled)}


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _flac_to_mp3(flac: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = dest.with_name(f".{dest.stem}.src.flac")
    src.write_bytes(flac)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        run_ffmpeg([*ffmpeg_input(src), "-c:a", "libmp3lame", "-q:a", "2", "-f", "mp3", str(tmp)])
        os.replace(tmp, dest)
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
