"""`vidal export languagebind`: a built dataset in the folder layout LanguageBind's VAT_dataset
reads (PKU-YuanGroup/LanguageBind, `data/base_datasets.py` and `data/process_*.py`).

Default, LanguageBind at 7070c53 (its current code):

  DEST/annotations.json                      {id: {folder, raw, mplug, polish_mplug, sound_mplug,
                                              ofa: [8]}} for every exported sample
  DEST/annotations_{depth,thermal,audio}.json   the same, only ids that have that modality
  DEST/FOLDER_resize256_skip15/ID.mp4        the clip (`--video-decode-backend decord`/mp4)
  DEST/FOLDER_resize256_skip15/ID_resize256_folder/{0..7}.jpg
                                             8 frames, short side 256 (`imgs`, what the
                                             official training scripts use)
  DEST/FOLDER/ID_depth_f8glpn_folder/{0..7}.png   depth, uint16 millimetres
  DEST/FOLDER/ID_thermal_folder/{0..7}.jpg       infrared, 3-channel JPEG
  DEST/FOLDER_ffmpeg_mp3/ID.mp3              audio, mono MP3 at 16 kHz (the path of the older
                                             audio reader; 7070c53's `al` path calls a
                                             `get_audio_anno()` that no longer exists)

`--upstream 148c444` (LanguageBind of Nov 2023) puts the clip at DEST/FOLDER/ID.mp4 and
writes no frame folders; everything else is the same.

Train one modality on its own annotation file (`--train-data annotations_audio.json`), so a
sample without that modality is never listed and LanguageBind never draws another in its place.
Keys and the folder name are checked with vidal.io.keys (a bad key is a per-sample error,
nothing is written outside DEST); every file appears whole (temp name, then rename).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vidal.io import languagebind as lb
from vidal.io.keys import is_safe_key
from vidal.media.audio import encode_mp3
from vidal.media.ffmpeg import MediaError
from vidal.media.frames import sample_keyframes

CURRENT, OLD = "7070c53", "148c444"
UPSTREAMS = (CURRENT, OLD)
MODALITIES = ("depth", "thermal", "audio")
IDS = ("key", "youtube")
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class Layout:
    """The paths of one LanguageBind version (`opj(data_root, folder, ...)` in its code)."""

    root: Path
    folder: str
    upstream: str = CURRENT
    ids: str = "key"  # key: the sample key; youtube: KEY.json extra.youtube_id when it is safe

    def video_folder(self) -> Path:
        suffix = "_resize256_skip15" if self.upstream == CURRENT else ""
        return self.root / f"{self.folder}{suffix}"

    def video(self, key: str) -> Path:
        return self.video_folder() / f"{key}.mp4"

    def frames(self, key: str) -> Path | None:
        if self.upstream != CURRENT:
            return None
        return self.video_folder() / f"{key}_resize256_folder"

    def depth(self, key: str) -> Path:
        return self.root / self.folder / f"{key}_depth_f8glpn_folder"

    def thermal(self, key: str) -> Path:
        return self.root / self.folder / f"{key}_thermal_folder"

    def audio(self, key: str) -> Path:
        return self.root / f"{self.folder}_ffmpeg_mp3" / f"{key}.mp3"


def export_languagebind(
    shards: list[str],
    dest: str | Path,
    folder: str = "vidal",
    upstream: str = CURRENT,
    relative_depth: str | None = None,
    ids: str = "key",
) -> dict:
    """Export every sample of `shards`; returns (and writes to DEST/export.json) the report."""
    import webdataset as wds

    if not is_safe_key(folder):
        raise lb.ExportError(f"--folder {folder!r} is not a safe name ([A-Za-z0-9][A-Za-z0-9_-]*)")
    if upstream not in UPSTREAMS:
        raise lb.ExportError(f"--upstream must be one of {UPSTREAMS}, got {upstream!r}")
    if ids not in IDS:
        raise lb.ExportError(f"--ids must be one of {IDS}, got {ids!r}")
    layout = Layout(Path(dest), folder, upstream, ids)
    near_far = lb.parse_near_far(relative_depth)
    if near_far is None:
        lb.refuse_relative_depth(shards)  # before anything is written
    files = _annotation_files(layout.root)
    report = Report()
    try:
        for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
            _export_one(sample, layout, near_far, files, report)
    except BaseException:
        for file in files.values():
            file.abort()
        raise
    for file in files.values():
        file.close()
    summary = report.summary(layout, near_far)
    lb.write_bytes(layout.root / "export.json", json.dumps(summary, indent=1).encode())
    return summary


def _annotation_files(root: Path) -> dict[str, lb.AnnotationFile]:
    files = {"all": lb.AnnotationFile(root / "annotations.json")}
    for modality in MODALITIES:
        files[modality] = lb.AnnotationFile(root / f"annotations_{modality}.json")
    return files


class Report:
    def __init__(self):
        self.counts, self.filled, self.reasons = Counter(), Counter(), Counter()
        self.errors: list[dict] = []

    def error(self, key: str, modality: str, exc: Exception) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        self.reasons[f"{modality}: {reason}"] += 1
        if len(self.errors) < MAX_ERRORS_SHOWN:
            self.errors.append({"key": str(key)[:80], "modality": modality, "error": str(exc)})

    def summary(self, layout: Layout, near_far) -> dict:
        return {
            "dest": str(layout.root),
            "upstream": layout.upstream,
            "folder": layout.folder,
            **self.counts,
            "views_filled_with_raw": dict(self.filled),
            "relative_depth_near_far_m": list(near_far) if near_far else None,
            "errors_by_reason": dict(self.reasons),
            "errors": self.errors,
        }


def _export_one(sample: dict, layout: Layout, near_far, files, report: Report) -> None:
    key = sample.get("__key__")
    try:
        key = lb.safe_key(key)
        meta = _meta(sample)
        key = _export_id(key, meta, layout, report)
        _write_video(sample, meta, layout, key)
    except (lb.SampleError, MediaError) as exc:
        report.error(key, "video", exc)
        report.counts["failed"] += 1
        return
    entry = lb.annotation(meta, layout.folder, report.filled)
    files["all"].add(key, entry)
    report.counts["samples"] += 1
    writers = {"depth": _write_depth, "thermal": _write_thermal, "audio": _write_audio}
    for modality, write in writers.items():
        try:
            if write(sample, meta, layout, key, near_far):
                files[modality].add(key, entry)
                report.counts[modality] += 1
        except (lb.SampleError, MediaError, OSError, ValueError) as exc:
            if isinstance(exc, lb.ExportError):
                raise
            report.error(key, modality, exc)


def _export_id(key: str, meta: dict, layout: Layout, report: Report) -> str:
    """The id LanguageBind sees: the sample key, or (`--ids youtube`, for datasets built
    from `vidal import languagebind`) the released YouTube id, when it is a safe key too; ids
    starting with `-` or `_` are not, and keep the sample key (counted)."""
    if layout.ids != "youtube":
        return key
    video_id = (meta.get("extra") or {}).get("youtube_id")
    if is_safe_key(video_id):
        return video_id
    report.counts["ids_kept_sample_key"] += 1
    return key


def _meta(sample: dict) -> dict:
    try:
        meta = json.loads(sample["json"])
    except (KeyError, ValueError) as exc:
        raise lb.SampleError("bad_json", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict) or "mp4" not in sample:
        raise lb.SampleError("incomplete", "the sample needs KEY.json (an object) and KEY.mp4")
    return meta


def _write_video(sample: dict, meta: dict, layout: Layout, key: str) -> None:
    """The clip, and (7070c53) its 8 frames: decoded from the clip before it is renamed into
    place, so an undecodable clip leaves nothing behind."""
    path = layout.video(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(sample["mp4"])
        frames_dir = layout.frames(key)
        if frames_dir is not None:
            frames = sample_keyframes(tmp, lb.NUM_FRAMES, "exact", None, backend="pyav").frames
            with lb.FrameFolder(frames_dir) as out:
                for k, frame in enumerate(lb.eight(list(frames))):
                    image = lb.exact_short_side(Image.fromarray(frame))
                    image.save(out / f"{k}.jpg", quality=95)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _count(meta: dict) -> int:
    return (meta.get("frames") or {}).get("count") or lb.NUM_FRAMES


def _write_depth(sample, meta, layout: Layout, key: str, near_far) -> bool:
    if "depth.png" not in sample:
        return False
    frames = lb.depth_mm(sample["depth.png"], meta, near_far)
    with lb.FrameFolder(layout.depth(key)) as out:
        for k, frame in enumerate(frames):  # uint16 stays uint16 (PNG mode I;16)
            Image.fromarray(frame).save(out / f"{k}.png")
    return True


def _write_thermal(sample, meta, layout: Layout, key: str, near_far) -> bool:
    if "ir.png" not in sample:
        return False
    frames = lb.eight(lb.untile(sample["ir.png"], _count(meta)))
    with lb.FrameFolder(layout.thermal(key)) as out:
        for k, frame in enumerate(frames):
            lb.thermal_rgb(frame).save(out / f"{k}.jpg", quality=95)
    return True


def _write_audio(sample, meta, layout: Layout, key: str, near_far) -> bool:
    if "flac" not in sample:
        return False
    dest = layout.audio(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = dest.with_name(f".{key}.src-{os.getpid()}.flac")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        src.write_bytes(sample["flac"])
        encode_mp3(src, tmp, 16000)
        os.replace(tmp, dest)
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return True
