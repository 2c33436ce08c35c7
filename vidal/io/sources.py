"""Inputs of a build: a folder of videos (with optional sidecars) or a manifest file.

Every input becomes a Sample, including the ones that are already known to be bad (a sidecar
that is not JSON, a URL with a refused scheme): those carry their error from the start, so
they stay in the accounting.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vidal.sample import Sample
from vidal.text import clean_text, hashtags_in, parse_hashtags

VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".flv",
        ".ts",
        ".mts",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".3gp",
        ".ogv",
    ]
)
MANIFEST_EXTENSIONS = (".parquet", ".csv", ".jsonl", ".json")
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "gcs://", "az://", "abfs://", "hf://")
TEXT_FIELDS = {"title", "text", "description", "caption", "hashtags", "tags"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class SourceError(ValueError):
    """The source as a whole cannot be read (not one bad sample: those become error rows)."""


@dataclass(frozen=True)
class SourceOptions:
    max_title_chars: int = 1000
    allow_local_in_manifest: bool = True


def make_key(name: str, uri: str) -> str:
    """A tar-safe, unique, stable key: a readable slug of `name` plus a hash of `uri`."""
    slug = _UNSAFE.sub("_", name).strip("_")[:48] or "sample"
    return f"{slug}-{hashlib.sha1(uri.encode('utf-8', 'replace')).hexdigest()[:10]}"


def shard_of(key: str, num_shards: int) -> int:
    """Deterministic shard membership: the same key and N always give the same shard."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % num_shards


def list_source(source: str, opts: SourceOptions = SourceOptions()) -> Iterator[Sample]:
    """Samples (shard unset) for a folder of videos or a manifest file."""
    path = Path(source)
    if path.is_dir():
        yield from _list_folder(path, opts)
    elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
        yield from _list_manifest(path, opts)
    elif path.exists():
        raise SourceError(
            f"{source} is neither a folder of videos nor a manifest "
            f"({', '.join(MANIFEST_EXTENSIONS)})"
        )
    else:
        raise SourceError(f"source {source} does not exist")


def _list_folder(root: Path, opts: SourceOptions) -> Iterator[Sample]:
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        # the key hashes the path inside the source folder, so moving or remounting the
        # folder keeps every key, shard and cached result
        sample = Sample(
            key=make_key(rel.rsplit(".", 1)[0], rel), shard=-1, source=str(path.resolve())
        )
        sample.meta = {
            "title": clean_text(path.stem.replace("_", " "), opts.max_title_chars),
            "hashtags": [],
            "name": path.name,
        }
        _apply_sidecars(sample, path, opts)
        yield sample


def _apply_sidecars(sample: Sample, video: Path, opts: SourceOptions) -> None:
    txt, js = video.with_suffix(".txt"), video.with_suffix(".json")
    if txt.is_file():
        text = txt.read_text("utf-8", errors="replace")
        sample.meta.update(title=clean_text(text, opts.max_title_chars), hashtags=hashtags_in(text))
    if js.is_file():
        try:
            data = json.loads(js.read_text("utf-8", errors="replace"))
            if not isinstance(data, dict):
                raise ValueError(f"top level is a {type(data).__name__}, not an object")
        except ValueError as exc:
            sample.fail("source", "bad_sidecar", f"{js.name} is not a JSON object ({exc})")
            return
        sample.meta.update(_text_meta(data, opts))


def _text_meta(row: dict, opts: SourceOptions) -> dict:
    """title/hashtags/text from a sidecar or manifest row; other columns kept under `extra`."""
    meta: dict = {}
    title = row.get("title") or row.get("caption") or row.get("text")
    if title is not None:
        meta["title"] = clean_text(title, opts.max_title_chars)
    tags = parse_hashtags(
        row.get("hashtags") if row.get("hashtags") is not None else row.get("tags")
    )
    if tags or "title" in meta:
        meta["hashtags"] = tags or hashtags_in(meta.get("title", ""))
    for name in ("text", "description"):
        if row.get(name) is not None:
            meta[name] = clean_text(row[name], opts.max_title_chars * 4)
    extra = {
        k: _jsonable(v) for k, v in row.items() if k not in TEXT_FIELDS | {"url", "path", "id"}
    }
    if extra:
        meta["extra"] = extra
    return meta


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _read_manifest(path: Path) -> list[dict]:
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pyarrow.parquet.read_table(path)
        elif suffix == ".csv":
            table = pyarrow.csv.read_csv(path)
        else:
            table = pyarrow.json.read_json(path)
    except Exception as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    if not {"url", "path"} & set(table.column_names):
        raise SourceError(
            f"manifest {path} needs a 'url' or 'path' column; it has "
            f"{', '.join(table.column_names)}"
        )
    return table.to_pylist()


def _list_manifest(path: Path, opts: SourceOptions) -> Iterator[Sample]:
    first_row: dict[str, int] = {}
    for index, row in enumerate(_read_manifest(path)):
        uri = str(row.get("path") or row.get("url") or "").strip()
        name = str(row.get("id") or os.path.splitext(os.path.basename(uri))[0] or f"row{index}")
        resolved, problem = _resolve_uri(uri, path.parent, opts)
        # keys hash the uri as written (relative paths stay relative): stable across machines
        identity = uri or f"#row{index}"
        repeat = first_row.setdefault(identity, index) != index
        key = make_key(name, f"{identity}#row{index}" if repeat else identity)
        sample = Sample(key=key, shard=-1, source=resolved)
        sample.meta = {"title": "", "hashtags": [], "row": index, **_text_meta(row, opts)}
        if problem:
            sample.fail("source", *problem)
        elif repeat:
            sample.drop("source", f"duplicate: same video as row {first_row[identity]}")
        yield sample


def _resolve_uri(uri: str, base: Path, opts: SourceOptions) -> tuple[str, tuple[str, str] | None]:
    if not uri:
        return "", ("bad_url", "the row has no url or path")
    lowered = uri.lower()
    if lowered.startswith(REMOTE_SCHEMES):
        return uri, None
    if "://" in uri or lowered.startswith(("data:", "javascript:")):
        return uri, ("bad_url", f"scheme of {uri[:80]!r} is not allowed")
    if not opts.allow_local_in_manifest:
        return uri, ("bad_url", "local paths in manifests are disabled")
    return str((base / uri).resolve()), None
