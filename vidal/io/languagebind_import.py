"""`vidal import languagebind --annotations FILE --out MANIFEST.parquet`: LanguageBind's released
VIDAL-10M texts (`id2title_folder_raw_ofa_mplug_gpt_sound10076613.json`: {youtube id: {folder,
raw, ofa: [8], mplug, polish_mplug, sound_mplug}}) as a manifest that `vidal crawl --urls` and
`vidal build --source` take as they are, so the missing modalities can be regenerated for the
released ids and training can use the original texts.

One row per id:
  id                  `yt_<youtube id>`: a vidal key (YouTube ids may start with `-` or `_`,
                      which keys may not)
  url                 https://www.youtube.com/watch?v=<youtube id>
  title               the released `raw` (title + hashtags)
  youtube_id, languagebind_folder   as released (kept in KEY.json `extra`)
  text_views          {raw, video_caption (mplug), enhanced (polish_mplug), audio_caption
                      (sound_mplug), keyframe_captions (ofa)}: vidal's view names; the build
                      puts them in KEY.json `text` wherever no stage computed that view
  text_provenance     "languagebind-release"

The JSON is streamed (ijson) and the parquet written in row groups, so memory stays bounded by
one row group whatever the file's size (the real file has 10M entries). An entry that is not an
object or whose id is not a YouTube id is skipped and counted, never fatal.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidal.io.keys import is_safe_key
from vidal.text import clean_text

PROVENANCE = "languagebind-release"
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")  # YouTube's are 11; a little slack for others
MAX_TEXT = 4000
ROWS_PER_GROUP = 10_000
VIEWS = pa.struct(
    [
        ("raw", pa.string()),
        ("video_caption", pa.string()),
        ("enhanced", pa.string()),
        ("audio_caption", pa.string()),
        ("keyframe_captions", pa.list_(pa.string())),
    ]
)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("title", pa.string()),
        ("youtube_id", pa.string()),
        ("languagebind_folder", pa.string()),
        ("text_views", VIEWS),
        ("text_provenance", pa.string()),
    ]
)
# vidal's view name <- LanguageBind's field
RELEASED = {"video_caption": "mplug", "enhanced": "polish_mplug", "audio_caption": "sound_mplug"}


class ReleaseError(ValueError):
    """The file is not LanguageBind's annotation JSON (one sentence for the user)."""


def import_languagebind(annotations: str | Path, out: str | Path) -> dict:
    """Stream `annotations` into the manifest `out` (parquet); returns the counts."""
    import ijson

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    counts, rows = Counter(), []
    try:
        with open(annotations, "rb") as f, pq.ParquetWriter(tmp, SCHEMA) as writer:
            for video_id, entry in ijson.kvitems(f, "", use_float=True):
                row, problem = manifest_row(video_id, entry)
                counts[problem or "rows"] += 1
                if row:
                    rows.append(row)
                if len(rows) >= ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pylist(rows, SCHEMA))
                    rows = []
            writer.write_table(pa.Table.from_pylist(rows, SCHEMA))
        if not counts:
            raise ReleaseError(f"{annotations} holds no {{id: entry}} object: nothing to import")
        os.replace(tmp, out)
    except ijson.JSONError as exc:
        why = str(exc).strip().splitlines()[0]
        raise ReleaseError(f"{annotations} is not LanguageBind's annotation JSON ({why})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"manifest": str(out), **counts}


def manifest_row(video_id: str, entry: object) -> tuple[dict | None, str | None]:
    """The manifest row of one released entry, or (None, why it was skipped)."""
    if not isinstance(entry, dict):
        return None, "skipped_not_an_object"
    if not YOUTUBE_ID.fullmatch(video_id) or not is_safe_key(f"yt_{video_id}"):
        return None, "skipped_bad_id"
    raw = _text(entry.get("raw"))
    views = {"raw": raw or None}
    for ours, theirs in RELEASED.items():
        views[ours] = _text(entry.get(theirs)) or None
    ofa = entry.get("ofa")
    captions = [_text(c) for c in ofa] if isinstance(ofa, list) else []
    views["keyframe_captions"] = captions if captions and all(captions) else None
    return {
        "id": f"yt_{video_id}",
        "url": f"https://www.youtube.com/watch?v={video_id}",
        "title": raw,
        "youtube_id": video_id,
        "languagebind_folder": _text(entry.get("folder")) or None,
        "text_views": views,
        "text_provenance": PROVENANCE,
    }, None


def _text(value: object) -> str:
    return clean_text(value, MAX_TEXT) if isinstance(value, str) else ""
