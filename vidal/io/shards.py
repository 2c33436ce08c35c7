"""Shard writer: `vidal-NNNNN.tar` (kept samples), `.parquet` (a row per input sample) and
`.stats.json` (counts, bytes, seconds), written in that order; the stats file is the shard's
completion marker.

What goes in comes from the stages' declarations (`Stage.outputs`, vidal.stages.outputs), over
every registered stage in the registry's order; the packer itself writes only the core:

- tar, per kept sample, members adjacent and sharing the key: each declared `Member`
  (`KEY.mp4`, `KEY.flac` when the clip has audio, `KEY.depth.png` / `KEY.ir.png`: the 8 frames
  tiled side by side, frame k at columns k*W..(k+1)*W), then `KEY.json` and `KEY.txt`;
- `KEY.json`: key, source, title, hashtags, text (every text view), caption_view, extra,
  errors, lineage, and each stage's `Public` fields under its key;
- parquet: the core columns (`CORE_FIELDS`), then each stage's `Column`s and member sizes.
"""

from __future__ import annotations

import collections
import io
import json
import tarfile
import time

import pyarrow as pa

from vidal import __version__
from vidal.io.store import Store
from vidal.net import redact, redact_text, redact_values
from vidal.sample import Sample, error_reason
from vidal.stages.outputs import CORE_FIELDS
from vidal.stages.registry import declared
from vidal.text import text_views

TAR_MTIME = 1_700_000_000  # fixed, so the same samples always give the same tar bytes


def shard_name(shard: int) -> str:
    return f"shards/vidal-{shard:05d}"


def primary_caption(sample: Sample, view: str) -> str:
    views = text_views(sample)
    return views.get(view) or views.get("raw") or ""


def sample_json(sample: Sample, caption_view: str) -> dict:
    """KEY.json: everything known about the sample, minus store paths."""
    doc = {
        "key": sample.key,
        "source": redact(sample.source),  # URL credentials never reach a published file
        "title": sample.meta.get("title", ""),
        "hashtags": sample.meta.get("hashtags", []),
        "text": text_views(sample),
        "caption_view": caption_view,
        "extra": redact_values(sample.meta.get("extra", {})),
        "errors": {stage: redact_text(message) for stage, message in sample.errors.items()},
        "lineage": {**sample.lineage, "vidal": __version__},
    }
    for name, outputs in declared():
        if outputs.public:
            doc[outputs.json_key(name)] = outputs.public.of(name, sample)
    return doc


def tar_members(store: Store, sample: Sample, caption_view: str) -> dict:
    members = {"__key__": sample.key}
    for name, outputs in declared():
        for member in outputs.members:
            rel = member.payload(name, sample)
            if rel:
                members[member.ext] = store.read_bytes(rel)
    members["json"] = json.dumps(
        sample_json(sample, caption_view), ensure_ascii=False, sort_keys=True
    ).encode("utf-8")
    members["txt"] = primary_caption(sample, caption_view).encode("utf-8")
    return members


def shard_schema() -> pa.Schema:
    """One schema for every shard's parquet, so all of them read as one table (an all-null or
    empty shard would otherwise get columns of type null, or none): the core columns, then
    every registered stage's columns and member sizes (null where a stage did not run)."""
    fields = list(CORE_FIELDS)
    for _, outputs in declared():
        fields += [(c.name, c.type) for c in outputs.columns]
        fields += [(m.size_column, pa.int64()) for m in outputs.members if m.size_column]
    return pa.schema(fields)


def __getattr__(name: str):
    if name == "SHARD_SCHEMA":  # the schema of the stages registered now
        return shard_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stage_columns(sample: Sample) -> dict:
    """The stages' declared column values. A value that cannot be computed fails the sample
    (reason `column_failed`), not the shard; call it before the sample's members are written."""
    values = {}
    for name, outputs in declared():
        for column in outputs.columns:
            try:
                values[column.name] = column.of(name, sample)
            except Exception as exc:  # a stage's column function: one bad sample, not the shard
                sample.fail("pack", "column_failed", f"{column.name}: {type(exc).__name__}: {exc}")
                values[column.name] = None
    return values


def shard_row(sample: Sample, caption_view: str, sizes: dict, values: dict | None = None) -> dict:
    """The sample's parquet row; `values`: its `stage_columns` when already computed."""
    caption = primary_caption(sample, caption_view)
    row = {
        "key": sample.key,
        "status": sample.status,
        "error": redact_text(sample.first_error),
        "error_reason": error_reason(sample.first_error),
        "dropped": sample.dropped,
        "source": redact(sample.source),
        "title": sample.meta.get("title", ""),
        "caption": caption,
        "caption_chars": len(caption),
        "sample_bytes": sum(sizes.values()) if sizes else None,
        **(stage_columns(sample) if values is None else values),
    }
    for _, outputs in declared():
        for member in outputs.members:
            if member.size_column:
                row[member.size_column] = sizes.get(member.ext)
    return row


def pack_shard(out: str, shard: int, rows_path: str, caption_view: str, fingerprint: str) -> dict:
    """Write one shard's tar, parquet and stats (last) from the stage rows at `rows_path`."""
    started = time.time()
    store = Store(out)
    store.sweep_temp("shards", prefix=f".vidal-{shard:05d}.")
    records = store.read_table(rows_path).column("record").to_pylist()
    samples = sorted((Sample.from_json(r) for r in records), key=lambda s: s.key)
    rows = []
    with (
        store.staging(f"{shard_name(shard)}.tar") as tmp,
        open(tmp, "wb") as stream,
        open_tar(stream) as tar,
    ):
        for sample in samples:
            values = stage_columns(sample)
            sizes = _write_sample(tar, store, sample, caption_view)
            rows.append(shard_row(sample, caption_view, sizes, values))
    store.write_table(
        f"{shard_name(shard)}.parquet", pa.Table.from_pylist(rows, schema=shard_schema())
    )
    stats = shard_stats(rows, shard, fingerprint, time.time() - started)
    stats["tar_bytes"] = store.fs.size(store.path(f"{shard_name(shard)}.tar"))
    store.write_json(f"{shard_name(shard)}.stats.json", stats)
    return stats


def _write_sample(tar: tarfile.TarFile, store: Store, sample: Sample, caption_view: str) -> dict:
    if not sample.ok:
        return {}
    try:
        members = tar_members(store, sample, caption_view)
    except OSError as exc:  # a payload vanished from the store: fail the sample, not the shard
        sample.fail("pack", "missing_payload", str(exc))
        return {}
    write_members(tar, members)
    return {k: len(v) for k, v in members.items() if k != "__key__"}


def open_tar(stream) -> tarfile.TarFile:
    """A shard's tar on `stream`, written front to back, in the format `write_members` says."""
    return tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT)


def write_members(tar: tarfile.TarFile, members: dict) -> None:
    """One sample's members (bytes values; no `.gz` extension, which webdataset would gzip),
    as webdataset's `TarWriter(mtime=TAR_MTIME, user="vidal", group="vidal")` writes them:
    byte for byte the same archive (in the tar `open_tar` opens: PAX, as TarWriter opens it
    whatever format it is given, so names over 100 characters work; members in sorted order,
    mode 0444; tests compare). Not through webdataset itself: importing it imports torch,
    seconds of CPU in every worker process that packs a shard."""
    key = members["__key__"]
    for ext in sorted(members):
        if ext.startswith("_"):
            continue
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(members[ext]), TAR_MTIME, 0o444
        info.uname = info.gname = "vidal"
        tar.addfile(info, io.BytesIO(members[ext]))


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
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
