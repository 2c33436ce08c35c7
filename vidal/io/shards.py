"""Shard writer: `vidal-NNNNN.tar` (kept samples), `.parquet` (a row per input sample) and
`.stats.json` (counts, bytes, seconds), written in that order; the stats file is the shard's
completion marker.

Tar layout, per kept sample, members adjacent and sharing the key:
  KEY.mp4  KEY.flac (when the clip has audio)  KEY.json  KEY.txt
  KEY.depth.png / KEY.ir.png: the 8 frames tiled side by side (frame k at columns k*W..(k+1)*W).
"""

from __future__ import annotations

import collections
import io
import json
import time

import pyarrow as pa

from vidal import __version__
from vidal.run.store import Store
from vidal.sample import Sample, error_reason
from vidal.text import raw_caption

TAR_MTIME = 1_700_000_000  # fixed, so the same samples always give the same tar bytes


def shard_name(shard: int) -> str:
    return f"shards/vidal-{shard:05d}"


def text_views(sample: Sample) -> dict:
    views = dict(sample.fields.get("captions", {}).get("views", {}))
    views.setdefault(
        "raw", raw_caption(sample.meta.get("title", ""), sample.meta.get("hashtags", []))
    )
    return views


def primary_caption(sample: Sample, view: str) -> str:
    views = text_views(sample)
    return views.get(view) or views.get("raw") or ""


def sample_json(sample: Sample, caption_view: str) -> dict:
    """KEY.json: everything known about the sample, minus store paths."""
    probe = sample.fields.get("probe", {})
    frames = sample.fields.get("keyframes", {})
    return {
        "key": sample.key,
        "source": sample.source,
        "title": sample.meta.get("title", ""),
        "hashtags": sample.meta.get("hashtags", []),
        "text": text_views(sample),
        "caption_view": caption_view,
        "extra": sample.meta.get("extra", {}),
        "source_video": {
            k: probe.get(k)
            for k in (
                "duration",
                "fps",
                "width",
                "height",
                "num_frames",
                "video_codec",
                "pix_fmt",
                "has_audio",
                "has_video",
            )
        },
        "clip": _public(sample.fields.get("clip", {})),
        "frames": {
            k: frames.get(k)
            for k in ("indices", "index_rule", "timestamps", "count", "width", "height")
        },
        "audio": _public(sample.fields.get("audio", {"present": False})),
        "vl_filter": _public(sample.fields.get("vl_filter", {}), "embeddings"),
        "depth": _public(sample.fields.get("depth", {})),
        "infrared": _public(sample.fields.get("infrared", {})),
        "dedup": sample.fields.get("dedup", {}),
        "errors": sample.errors,
        "lineage": {**sample.lineage, "vidal": __version__},
    }


def _public(fields: dict, *private: str) -> dict:
    """A stage's fields without store locations (meaningless outside this build)."""
    return {k: v for k, v in fields.items() if k not in ("file", *private)}


def tar_members(store: Store, sample: Sample, caption_view: str) -> dict:
    members = {"__key__": sample.key}
    for stage, ext in (
        ("clip", "mp4"),
        ("audio", "flac"),
        ("depth", "depth.png"),
        ("infrared", "ir.png"),
    ):
        rel = sample.fields.get(stage, {}).get("file")
        if rel:
            members[ext] = store.read_bytes(rel)
    members["json"] = json.dumps(
        sample_json(sample, caption_view), ensure_ascii=False, sort_keys=True
    ).encode("utf-8")
    members["txt"] = primary_caption(sample, caption_view).encode("utf-8")
    return members


# One schema for every shard's parquet, so all of them read as one table (an all-null or
# empty shard would otherwise get columns of type null, or none).
SHARD_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("error_reason", pa.string()),
        ("dropped", pa.string()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("duration", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("fps", pa.float64()),
        ("has_audio", pa.bool_()),
        ("frame_indices", pa.list_(pa.int64())),
        ("caption", pa.string()),
        ("caption_chars", pa.int64()),
        ("mp4_bytes", pa.int64()),
        ("flac_bytes", pa.int64()),
        ("sample_bytes", pa.int64()),
        ("vl_score", pa.float64()),
        ("vl_score_max", pa.float64()),
        ("depth_min_mm", pa.float64()),
        ("depth_max_mm", pa.float64()),
        ("caption_views", pa.list_(pa.string())),
        ("guardrail_rejections", pa.list_(pa.string())),
    ]
)


def shard_row(sample: Sample, caption_view: str, sizes: dict) -> dict:
    probe = sample.fields.get("probe", {})
    vl, depth = sample.fields.get("vl_filter", {}), sample.fields.get("depth", {})
    caption = primary_caption(sample, caption_view)
    return {
        "key": sample.key,
        "status": sample.status,
        "error": sample.first_error,
        "error_reason": error_reason(sample.first_error),
        "dropped": sample.dropped,
        "source": sample.source,
        "title": sample.meta.get("title", ""),
        "duration": probe.get("duration"),
        "width": probe.get("width"),
        "height": probe.get("height"),
        "fps": probe.get("fps"),
        "has_audio": probe.get("has_audio"),
        "frame_indices": sample.fields.get("keyframes", {}).get("indices"),
        "caption": caption,
        "caption_chars": len(caption),
        "mp4_bytes": sizes.get("mp4"),
        "flac_bytes": sizes.get("flac"),
        "sample_bytes": sum(sizes.values()) if sizes else None,
        "vl_score": vl.get("score"),
        "vl_score_max": vl.get("score_max"),
        "depth_min_mm": depth.get("min_mm"),
        "depth_max_mm": depth.get("max_mm"),
        "caption_views": sorted(text_views(sample)),
        "guardrail_rejections": guardrail_rejections(sample),
    }


def guardrail_rejections(sample: Sample) -> list[str]:
    """`view: reason` for every caption output the guardrails rejected (vidal.text_guard)."""
    rejected = sample.fields.get("captions", {}).get("rejected", {})
    return [f"{view}: {r.split(':', 1)[0]}" for view, reasons in rejected.items() for r in reasons]


def pack_shard(out: str, shard: int, rows_path: str, caption_view: str, fingerprint: str) -> dict:
    """Write one shard's tar, parquet and stats (last) from the stage rows at `rows_path`."""
    started = time.time()
    store = Store(out)
    store.sweep_temp("shards", prefix=f".vidal-{shard:05d}.")
    records = store.read_table(rows_path).column("record").to_pylist()
    samples = sorted((Sample.from_json(r) for r in records), key=lambda s: s.key)
    rows = []
    import webdataset as wds  # imports torch: only where a tar is written, not at CLI start

    with store.staging(f"{shard_name(shard)}.tar") as tmp, open(tmp, "wb") as stream:
        writer = wds.TarWriter(stream, mtime=TAR_MTIME, user="vidal", group="vidal")
        for sample in samples:
            sizes = _write_sample(writer, store, sample, caption_view)
            rows.append(shard_row(sample, caption_view, sizes))
        writer.close()
    store.write_table(
        f"{shard_name(shard)}.parquet", pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    )
    stats = shard_stats(rows, shard, fingerprint, time.time() - started)
    stats["tar_bytes"] = store.fs.size(store.path(f"{shard_name(shard)}.tar"))
    store.write_json(f"{shard_name(shard)}.stats.json", stats)
    return stats


def _write_sample(writer, store: Store, sample: Sample, caption_view: str) -> dict:
    if not sample.ok:
        return {}
    try:
        members = tar_members(store, sample, caption_view)
    except OSError as exc:  # a payload vanished from the store: fail the sample, not the shard
        sample.fail("pack", "missing_payload", str(exc))
        return {}
    writer.write(members)
    return {k: len(v) for k, v in members.items() if k != "__key__"}


def shard_stats(rows: list[dict], shard: int, fingerprint: str, seconds: float) -> dict:
    status = collections.Counter(r["status"] for r in rows)
    errors = collections.Counter(r["error_reason"] for r in rows if r["error_reason"])
    drops = collections.Counter(r["dropped"].split(":")[0] for r in rows if r["dropped"])
    guards = collections.Counter(g for r in rows for g in r.get("guardrail_rejections") or [])
    by_reason = collections.Counter()
    for name, count in guards.items():
        by_reason[name.split(": ", 1)[1]] += count
    return {
        "shard": shard,
        "fingerprint": fingerprint,
        "samples_in": len(rows),
        "kept": status.get("ok", 0),
        "dropped": status.get("dropped", 0),
        "failed": status.get("failed", 0),
        "errors": dict(errors),
        "drops": dict(drops),
        "guardrails": dict(by_reason),  # caption outputs rejected, per reason
        "guardrails_by_view": dict(guards),
        "sample_bytes": sum(r["sample_bytes"] or 0 for r in rows),
        "seconds": round(seconds, 3),
    }


def read_stats(store: Store, shard: int) -> dict | None:
    return store.read_json(f"{shard_name(shard)}.stats.json")


def list_tar_keys(data: bytes) -> list[str]:
    """Keys of a tar's samples, for tests and checks (no vidal reader needed elsewhere)."""
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
