"""Inputs of a build: a folder of videos (with optional sidecars) or a manifest file.

Every input becomes a Sample, including the ones that are already known to be bad (a sidecar
that is not JSON, a URL with a refused scheme): those carry their error from the start, so
they stay in the accounting.

Sources are untrusted: a folder never leads out of itself through a symlink (unless
`follow_symlinks`), sidecars are read up to a cap, and every text a row carries is cut to its
cap in Arrow before it becomes a Python string, so a tiny file cannot expand into gigabytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vidal.io.keys import check_key
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
MAX_URI_CHARS = 8192  # signed URLs run to a few kB; longer is no URL a crawler made
MAX_LIST_ITEMS = 256  # items kept of a list cell (hashtags keep 64 of them)
BATCH_ROWS = 256  # manifest rows converted to Python at a time
PART_ROWS = 1_000_000  # parquet manifest rows a planning task lists (whole row groups)


class SourceError(ValueError):
    """The source as a whole cannot be read (not one bad sample: those become error rows)."""


@dataclass(frozen=True)
class SourceOptions:
    max_title_chars: int = 1000
    allow_local_in_manifest: bool = True
    follow_symlinks: bool = False  # follow links that lead out of a source folder
    max_sidecar_bytes: int = 64 * 1024

    @classmethod
    def from_config(cls, config) -> SourceOptions:
        """From the `source` section of the config (vidal.config.SourceConfig)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(config).items() if k in names})

    @property
    def max_cell_chars(self) -> int:
        """What any text cell of a row keeps (descriptions keep 4x a title)."""
        return self.max_title_chars * 4


def make_key(name: str, uri: str) -> str:
    """A tar-safe, unique, stable key: a readable slug of `name` plus a hash of `uri`.

    The slug starts with a letter or digit (vidal.io.keys: nothing reads as an option); the
    hash is of the uri's bytes, so names that are not UTF-8 keep distinct keys."""
    slug = _UNSAFE.sub("_", name).strip("_-")[:48].strip("_-") or "sample"
    digest = hashlib.sha1(_uri_bytes(uri)).hexdigest()[:10]
    return check_key(f"{slug}-{digest}")


def _uri_bytes(uri: str) -> bytes:
    """The bytes of a path or URL: a file name's own bytes even when they are not UTF-8."""
    try:
        return os.fsencode(uri)
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return uri.encode("utf-8", "surrogatepass")


def shard_of(key: str, num_shards: int) -> int:
    """Deterministic shard membership: the same key and N always give the same shard."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % num_shards


def list_source(source: str, opts: SourceOptions = SourceOptions()) -> Iterator[Sample]:
    """Samples (shard unset) for a folder of videos or a manifest file."""
    path = _source_path(source)
    if path.is_dir():
        yield from _list_folder(path, opts)
    else:
        yield from _list_manifest(path, opts)


def _source_path(source: str) -> Path:
    """The source as a folder or a manifest file; SourceError if it is neither."""
    if _printable(source) != source:  # every sample's path would be unrecordable
        raise SourceError(f"the source path {ascii(source)} is not UTF-8: rename it")
    path = Path(source)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS):
        return path
    if path.exists():
        raise SourceError(
            f"{source} is neither a folder of videos nor a manifest "
            f"({', '.join(MANIFEST_EXTENSIONS)})"
        )
    raise SourceError(f"source {source} does not exist")


@dataclass(frozen=True)
class SourcePart:
    """What one planning task lists: a folder or a streamed manifest whole (`rows` None), or
    `rows` rows of a parquet manifest from row `first_row`: its row groups [start, stop)."""

    index: int  # the part's place in the listing order
    first_row: int = 0
    rows: int | None = None
    row_groups: tuple[int, int] | None = None


def source_parts(source: str, rows_per_part: int = PART_ROWS) -> list[SourcePart]:
    """The source cut into parts listed apart (whole parquet row groups, about
    `rows_per_part` rows a part); listing them in order gives `list_source`'s samples."""
    path = _source_path(source)
    if path.is_dir() or path.suffix.lower() != ".parquet":
        return [SourcePart(0)]
    try:
        import pyarrow.parquet

        meta = pyarrow.parquet.ParquetFile(path).metadata
        names = set(meta.schema.to_arrow_schema().names)
    except Exception as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    _check_uri_columns(path, names)
    parts, start, row, rows = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if g + 1 == meta.num_row_groups or rows >= rows_per_part:
            parts.append(SourcePart(len(parts), row, rows, (start, g + 1)))
            start, row, rows = g + 1, row + rows, 0
    return parts or [SourcePart(0, 0, 0, (0, 0))]


def list_part(source: str, part: SourcePart, repeats: Repeats, opts: SourceOptions):
    """The samples of one part (see `source_parts`); `repeats` comes from `find_repeats`."""
    path = _source_path(source)
    if path.is_dir():
        yield from _list_folder(path, opts)
        return
    batches = _manifest_batches(path, opts, part.row_groups)
    yield from _manifest_samples(batches, path, part.first_row, repeats, opts)


def _list_folder(root: Path, opts: SourceOptions) -> Iterator[Sample]:
    top = os.path.realpath(root)
    for rel in sorted(_video_files(top, opts.follow_symlinks), key=lambda r: r.split("/")):
        sample = _folder_sample(top, rel, opts)
        if sample is not None:
            yield sample


def _video_files(top: str, follow: bool) -> Iterator[str]:
    """Paths (relative to `top`, `/`-separated) of the video-named files and links under it.

    A linked folder is entered only with `follow` (and never twice: links can loop); FIFOs,
    devices and sockets are skipped, as nothing in them is a video file."""
    info = os.stat(top)
    seen = {(info.st_dev, info.st_ino)}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(os.path.join(top, rel_dir)) as entries:
                found = list(entries)
        except OSError:
            continue  # an unreadable folder holds nothing this build can read
        for entry in found:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=follow) and _first_visit(entry, seen):
                pending.append(rel)
            elif os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS and (
                entry.is_symlink() or entry.is_file(follow_symlinks=False)
            ):
                yield rel


def _first_visit(entry: os.DirEntry, seen: set) -> bool:
    try:
        info = entry.stat()
    except OSError:
        return False
    node = (info.st_dev, info.st_ino)
    if node in seen:
        return False
    seen.add(node)
    return True


def _folder_sample(top: str, rel: str, opts: SourceOptions) -> Sample | None:
    """The sample of one video file; a name that is not UTF-8 or a link out of the folder
    gives a failed sample, so it stays in the accounting; a link to no file gives None."""
    path = os.path.join(top, rel)
    shown_rel = _printable(rel)
    stem, name = os.path.splitext(os.path.basename(shown_rel))[0], os.path.basename(shown_rel)
    # the key hashes the path inside the source folder, so moving or remounting the
    # folder keeps every key, shard and cached result
    sample = Sample(key=make_key(rel.rsplit(".", 1)[0], rel), shard=-1, source=path)
    sample.meta = {
        "title": clean_text(stem.replace("_", " "), opts.max_title_chars),
        "hashtags": [],
        "name": name,
    }
    if shown_rel != rel:
        sample.source = os.path.join(top, shown_rel)
        sample.fail("source", "bad_name", f"{ascii(rel)[1:-1]}: the file name is not UTF-8")
        return sample
    problem = _link_problem(top, path, opts)
    if problem and "outside" in problem:
        sample.fail("source", "symlink_outside", problem)
        return sample
    if problem:  # dangling, or a FIFO or device: skipped like one that is not linked
        return None
    sample.source = os.path.realpath(path)
    _apply_sidecars(sample, top, path, opts)
    return sample


def _link_problem(top: str, path: str, opts: SourceOptions) -> str | None:
    """Why the video (or sidecar) at `path` may not be read; None when it may."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    if not opts.follow_symlinks and not _inside(top, target):
        name = _printable(os.path.basename(path))
        return f"{name} links outside the source folder (source.follow_symlinks allows it)"
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        regular = False
    return None if regular else f"{_printable(os.path.basename(path))} links to no file"


def _inside(top: str, target: str) -> bool:
    return target == top or target.startswith(top.rstrip("/") + "/")


def _printable(text: str) -> str:
    """`text` with bytes that are not UTF-8 (surrogate escapes) shown as U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace")


def _apply_sidecars(sample: Sample, top: str, video: str, opts: SourceOptions) -> None:
    base = os.path.splitext(video)[0]
    try:
        text = _read_sidecar(top, base + ".txt", opts)
        if text is not None:  # a long caption is cut: the title keeps max_title_chars anyway
            text = text[: opts.max_sidecar_bytes].decode("utf-8", errors="replace")
            title = clean_text(text, opts.max_title_chars)
            sample.meta.update(title=title, hashtags=hashtags_in(text))
        raw = _read_sidecar(top, base + ".json", opts)
        if raw is not None:
            sample.meta.update(_text_meta(_sidecar_json(raw, base + ".json", opts), opts))
    except SidecarError as exc:
        sample.fail("source", exc.reason, exc.detail)


class SidecarError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def _read_sidecar(top: str, path: str, opts: SourceOptions) -> bytes | None:
    """At most max_sidecar_bytes + 1 bytes of the sidecar at `path`; None when there is no
    such file (a folder or a FIFO of that name is not a sidecar)."""
    if not os.path.lexists(path):
        return None
    problem = _link_problem(top, path, opts)
    if problem and "outside" in problem:
        raise SidecarError("symlink_outside", problem)
    try:  # O_NOFOLLOW: a link swapped in after the check is refused, not followed
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if problem:  # a dangling link: as if there were no sidecar
            return None
        name = _printable(os.path.basename(path))
        raise SidecarError("bad_sidecar", f"cannot read {name}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(opts.max_sidecar_bytes + 1)


def _sidecar_json(raw: bytes, path: str, opts: SourceOptions) -> dict:
    name = _printable(os.path.basename(path))
    if len(raw) > opts.max_sidecar_bytes:
        detail = f"{name} is larger than {opts.max_sidecar_bytes} bytes (source.max_sidecar_bytes)"
        raise SidecarError("bad_sidecar", detail)
    try:
        data = json.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise SidecarError("bad_sidecar", f"{name} is not a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SidecarError("bad_sidecar", f"{name} is not a JSON object (top level is a {kind})")
    return data


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


def _manifest_batches(path: Path, opts: SourceOptions, row_groups=None) -> Iterator[list[dict]]:
    """The manifest's rows (of parquet `row_groups` [start, stop) when given), a batch at a
    time, every cell cut to its cap while still in Arrow (a parquet of repeated 1 MiB titles
    stays one dictionary entry until it is cut)."""
    try:
        batches, names = _open_manifest(path, row_groups=row_groups)
    except Exception as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    _check_uri_columns(path, names)
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # a file cut short or corrupt halfway is still unreadable
            raise SourceError(f"cannot read manifest {path}: {exc}") from exc
        if batch is None:
            return
        yield _capped(batch, opts).to_pylist()


def _check_uri_columns(path: Path, names) -> None:
    if not {"url", "path"} & set(names):
        raise SourceError(
            f"manifest {path} needs a 'url' or 'path' column; it has {', '.join(names)}"
        )


def _open_manifest(path: Path, columns: list[str] | None = None, row_groups=None):
    """(record batches, column names), read lazily where the format allows (only `columns`
    and `row_groups` [start, stop) of a parquet manifest, when given)."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        meta = pyarrow.parquet.ParquetFile(path)
        texts = [c.path for c in meta.schema if c.physical_type == "BYTE_ARRAY"]
        # text as dictionaries: a value repeated in every row is held (and cut) once
        reader = pyarrow.parquet.ParquetFile(path, read_dictionary=texts)
        names = reader.schema_arrow.names
        wanted = [c for c in columns or () if c in names] or None
        size = BATCH_ROWS if wanted is None else 64 * BATCH_ROWS
        groups = range(*row_groups) if row_groups else None
        return reader.iter_batches(size, row_groups=groups, columns=wanted), names
    if suffix == ".csv":
        reader = pyarrow.csv.open_csv(path)
        return _rebatched(reader), reader.schema.names
    table = pyarrow.json.read_json(path)
    return iter(table.to_batches(BATCH_ROWS)), table.column_names


def _rebatched(reader) -> Iterator:
    for batch in reader:
        for start in range(0, batch.num_rows, BATCH_ROWS):
            yield batch.slice(start, BATCH_ROWS)


def _capped(batch, opts: SourceOptions):
    """`batch` with every text cut to its cap and every list to MAX_LIST_ITEMS items."""
    import pyarrow as pa

    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        chars = MAX_URI_CHARS + 1 if name in ("url", "path", "id") else opts.max_cell_chars
        columns.append(_cap_array(column, chars, MAX_LIST_ITEMS))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _cap_array(array, chars: int, items: int):
    """Strings cut to `chars`, lists to `items`; nested values get 16 times less of each, so
    a cell holds about the same amount of text however deep it nests."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        values = _cap_array(array.dictionary, chars, items)
        return pa.DictionaryArray.from_arrays(array.indices, values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.utf8_slice_codeunits(array, 0, chars)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pc.binary_slice(array, 0, chars)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        array = pc.list_slice(array, 0, items)
        inner = _cap_array(array.flatten(), max(16, chars // 16), max(1, items // 16))
        offsets = pc.subtract(array.offsets, array.offsets[0])
        return type(array).from_arrays(offsets, inner, mask=array.is_null())
    if pa.types.is_struct(kind):
        fields = [_cap_array(array.field(i), chars, items) for i in range(kind.num_fields)]
        names = [kind.field(i).name for i in range(kind.num_fields)]
        return pa.StructArray.from_arrays(fields, names=names, mask=array.is_null())
    return array


def _list_manifest(path: Path, opts: SourceOptions) -> Iterator[Sample]:
    batches = _manifest_batches(path, opts)
    first = next(batches, [])  # a manifest that cannot be read is refused before any pass
    try:
        repeats = Repeats(_row_identities(path))
    except Exception as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    yield from _manifest_samples(itertools.chain([first], batches), path, 0, repeats, opts)


def _manifest_samples(batches, path: Path, first_row: int, repeats: Repeats, opts):
    base = Path(os.path.realpath(path.parent))
    index = first_row - 1
    for rows in batches:
        for row in rows:
            index += 1
            yield _manifest_sample(row, index, base, repeats, opts)


def _row_uri(path, url) -> str:
    return str(path or url or "").strip()


def _identity(row: dict, index: int) -> str:
    """What makes two rows the same video: the uri as written, else the row's place."""
    return _row_uri(row.get("path"), row.get("url")) or f"#row{index}"


def _row_identities(path: Path) -> Iterator[str]:
    """Each row's identity (its uri as written, else `#row<i>`), reading only the uri columns
    where the format allows (a first, cheap pass over the manifest)."""
    batches, _ = _open_manifest(path, columns=["path", "url"])
    index = 0
    for batch in batches:
        # capped and named as the rows' own pass caps them (`_capped`), so both passes agree
        cols = {
            n: _cap_array(batch.column(n), MAX_URI_CHARS + 1, MAX_LIST_ITEMS).to_pylist()
            for n in ("path", "url")
            if n in batch.schema.names
        }
        for i in range(batch.num_rows):
            yield _identity({n: values[i] for n, values in cols.items()}, index)
            index += 1


class Repeats:
    """Which manifest rows repeat an earlier row's video, in bounded memory: 8 bytes a row
    (a hash of its identity) instead of the identities themselves; the few rows a hash says
    repeat another are confirmed by their identities, so a hash collision never drops a video."""

    def __init__(self, identities: Iterator[str]):
        import array

        import numpy as np

        hashes = array.array("Q")
        for identity in identities:
            digest = hashlib.blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=8)
            hashes.append(int.from_bytes(digest.digest(), "little"))
        h = np.frombuffer(hashes, dtype=np.uint64) if hashes else np.zeros(0, np.uint64)
        # a stable sort puts equal hashes together, earliest row first; only the rows after the
        # first of a run repeat (peak: three arrays of 8 bytes a row, not np.unique's six)
        order = np.argsort(h, kind="stable")
        ordered = h[order]
        del hashes, h
        later = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1  # sorted positions that repeat
        del ordered
        run_start = np.flatnonzero(np.diff(later, prepend=-2) != 1)  # later[i] opens a run
        firsts = np.repeat(later[run_start] - 1, np.diff(np.append(run_start, len(later))))
        self.claimed = dict(zip(order[later].tolist(), order[firsts].tolist(), strict=True))
        self.firsts = set(self.claimed.values())
        self.seen: dict[int, str] = {}  # identities of rows that others claim to repeat

    def first_row(self, index: int, identity: str) -> int:
        """The earliest row with this identity (`index` itself when it is the first)."""
        if index in self.firsts:
            self.seen[index] = identity
        first = self.claimed.get(index)
        if first is not None and self.seen.get(first) == identity:
            return first
        return index

    @classmethod
    def known(cls, claimed: dict[int, int], seen: dict[int, str]) -> Repeats:
        """Repeats found before (`find_repeats`), with the identities of the rows claimed."""
        repeats = cls.__new__(cls)
        repeats.claimed, repeats.seen = claimed, seen
        repeats.firsts = set(claimed.values())
        return repeats

    def within(self, start: int, stop: int) -> Repeats:
        """Only what rows [start, stop) need: a planning task's share."""
        claimed = {r: f for r, f in self.claimed.items() if start <= r < stop}
        return Repeats.known(claimed, {f: self.seen[f] for f in set(claimed.values())})

    def to_json(self) -> str:
        return json.dumps({"claimed": list(self.claimed.items()), "seen": list(self.seen.items())})

    @classmethod
    def from_json(cls, text: str) -> Repeats:
        data = json.loads(text)
        return cls.known(dict(data["claimed"]), dict(data["seen"]))


def find_repeats(source: str, opts: SourceOptions) -> Repeats:
    """The manifest's repeated rows with their first rows' identities, found before listing
    it in parts (a part does not see the rows before it); none for a folder."""
    path = _source_path(source)
    if path.is_dir():
        return Repeats.known({}, {})
    try:
        repeats = Repeats(_row_identities(path))
        if repeats.firsts:
            repeats.seen = _identities_of(path, repeats.firsts, opts)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read manifest {path}: {exc}") from exc
    return repeats


def _identities_of(path: Path, rows: set[int], opts: SourceOptions) -> dict[int, str]:
    """The identities of the manifest rows `rows`, made as `_manifest_sample` makes them
    (from capped cells); only the batches holding one of them become Python rows."""
    import numpy as np

    wanted = np.array(sorted(rows), dtype=np.int64)
    batches, _ = _open_manifest(path, columns=["path", "url"])
    found, start = {}, 0
    for batch in batches:
        lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
        if hi > lo:
            rows_ = _capped(batch, opts).to_pylist()
            found.update((i, _identity(rows_[i - start], i)) for i in wanted[lo:hi].tolist())
        start += batch.num_rows
    return found


def _manifest_sample(row: dict, index: int, base: Path, repeats: Repeats, opts) -> Sample:
    uri = _row_uri(row.get("path"), row.get("url"))
    name = str(row.get("id") or os.path.splitext(os.path.basename(uri))[0] or f"row{index}")
    resolved, problem = _resolve_uri(uri, base, opts)
    # keys hash the uri as written (relative paths stay relative): stable across machines
    identity = _identity(row, index)
    first = repeats.first_row(index, identity)
    repeat = first != index
    key = make_key(name, f"{identity}#row{index}" if repeat else identity)
    sample = Sample(key=key, shard=-1, source=resolved)
    sample.meta = {"title": "", "hashtags": [], "row": index, **_text_meta(row, opts)}
    if problem:
        sample.fail("source", *problem)
    elif repeat:
        sample.drop("source", f"duplicate: same video as row {first}")
    return sample


def _resolve_uri(uri: str, base: Path, opts: SourceOptions) -> tuple[str, tuple[str, str] | None]:
    if not uri:
        return "", ("bad_url", "the row has no url or path")
    if len(uri) > MAX_URI_CHARS:
        return uri[:80], ("bad_url", f"longer than {MAX_URI_CHARS} characters")
    lowered = uri.lower()
    if lowered.startswith(REMOTE_SCHEMES):
        return uri, None
    if "://" in uri or lowered.startswith(("data:", "javascript:")):
        return uri, ("bad_url", f"scheme of {uri[:80]!r} is not allowed")
    if not opts.allow_local_in_manifest:
        return uri, ("bad_url", "local paths in manifests are disabled")
    # `base` is resolved once; a path per row is only normalised (resolving every component of
    # every row costs a stat each: minutes at 10^7 rows)
    return os.path.normpath(os.path.join(base, uri)), None
