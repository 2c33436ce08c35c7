"""Planning: the source listed into per-shard source rows as a map/reduce pass in the runner's
workers, so the driver holds O(shards) state however long the source is.

1. One task finds the manifest's repeated rows (`find_repeats`: 8 bytes a row while it runs;
   what it keeps, the repeated rows only, goes to `work/plan/repeats.json`).
2. Map tasks, one per part of the source (`source_parts`: a range of parquet row groups, or a
   folder or streamed manifest whole), turn rows into samples, give each its shard and spill
   them per shard: `work/plan/<part>/<shard>.tsv`, lines `key<TAB>record`, at most
   `flush_every` records in memory. A part's folder gets its name only when it is complete.
3. Reduce tasks, one per group of shards, read a shard's spills in part order (the listing
   order), digest its records, and write its source rows (vidal.run.rows, the one writer)
   only when the digest changed; each returns (shard, digest, samples) and nothing more.

Spills are scratch: a plan starts by removing what a killed one left and ends by removing its
own. The result is the one `list_source` gives, grouped by `shard_of`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import uuid

from vidal.io.sources import (
    PART_ROWS,
    Repeats,
    SourceError,
    SourceOptions,
    SourcePart,
    find_repeats,
    list_part,
    shard_of,
    source_parts,
)
from vidal.io.store import Store
from vidal.run import rows as rows_io

SPILLS = "work/plan"
REPEATS = f"{SPILLS}/repeats.json"
SHARDS_PER_REDUCE = 64


def plan_source(
    store: Store,
    source: str,
    opts: SourceOptions,
    num_shards: int,
    runner,
    rows_per_part: int = PART_ROWS,
    shards_per_reduce: int = SHARDS_PER_REDUCE,
    progress=None,
) -> tuple[dict[int, str], int]:
    """Write every shard's source rows whose content changed; returns (each shard's source
    digest, the number of samples). `progress`: a Builder's progress (`add(label, total)`)."""
    store.remove(SPILLS, recursive=True)  # what a killed plan left
    parts = source_parts(source, rows_per_part)
    with _source_errors():
        (repeated,) = runner.map_shards(save_repeats, [(store, source, opts)])
        listed = progress.add("plan: list", total=len(parts)) if progress else None
        items = [(store, source, opts, part, num_shards, repeated) for part in parts]
        runner.map_shards(spill_part, items, listed)
    groups = [
        list(range(start, min(start + shards_per_reduce, num_shards)))
        for start in range(0, num_shards, shards_per_reduce)
    ]
    written = progress.add("plan: shards", total=len(groups)) if progress else None
    found = runner.map_shards(write_shards, [(store, g, len(parts)) for g in groups], written)
    store.remove(SPILLS, recursive=True)
    digests = {shard: fp for group in found for shard, fp, _ in group}
    return dict(sorted(digests.items())), sum(n for group in found for _, _, n in group)


@contextlib.contextmanager
def _source_errors():
    """A source that cannot be read, found in a worker, reaches the user as the SourceError
    itself, not wrapped in the runner's task error (Ray's carries a remote traceback)."""
    try:
        yield
    except SourceError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SourceError):
            raise cause from None
        raise


def save_repeats(store: Store, source: str, opts: SourceOptions) -> bool:
    """Find the manifest's repeated rows and store them; whether there are any."""
    repeats = find_repeats(source, opts)
    if repeats.claimed:
        store.write_bytes(REPEATS, repeats.to_json().encode(), durable=False)
    return bool(repeats.claimed)


def spill_part(
    store: Store,
    source: str,
    opts: SourceOptions,
    part: SourcePart,
    num_shards: int,
    repeated: bool,
    flush_every: int = 100_000,
) -> int:
    """List one part of the source into per-shard spill files; returns its sample count."""
    repeats = Repeats.known({}, {})
    if repeated:
        repeats = Repeats.from_json(store.read_bytes(REPEATS).decode())
        if part.rows is not None:
            repeats = repeats.within(part.first_row, part.first_row + part.rows)
    buffers: dict[int, list[str]] = collections.defaultdict(list)
    count = 0
    with _part_folder(store, part.index) as folder:
        for sample in list_part(source, part, repeats, opts):
            sample.shard = shard_of(sample.key, num_shards)
            buffers[sample.shard].append(f"{sample.key}\t{sample.to_json()}\n")
            count += 1
            if count % flush_every == 0:
                _spill(folder, buffers)
        _spill(folder, buffers)
    return count


@contextlib.contextmanager
def _part_folder(store: Store, part: int):
    """A local folder to spill a part into; it becomes `work/plan/<part>` when complete (a
    retried task's twin replaces the first attempt's folder whole)."""
    final = f"{SPILLS}/{part:05d}"
    if not store.is_local:
        with tempfile.TemporaryDirectory(prefix="vidal-plan-") as folder:
            yield folder
            for name in sorted(os.listdir(folder)):
                store.copy_in(os.path.join(folder, name), f"{final}/{name}")
        return
    folder = store.path(f"{SPILLS}/.{part:05d}.tmp-{uuid.uuid4().hex[:10]}")
    os.makedirs(folder)
    try:
        yield folder
        shutil.rmtree(store.path(final), ignore_errors=True)
        os.replace(folder, store.path(final))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spill(folder: str, buffers: dict[int, list[str]]) -> None:
    for shard, lines in buffers.items():
        with open(os.path.join(folder, f"{shard:05d}.tsv"), "a", encoding="utf-8") as f:
            f.writelines(lines)
    buffers.clear()


def write_shards(store: Store, shards: list[int], parts: int) -> list[tuple[int, str, int]]:
    """Merge each shard's spills and write its source rows if they changed: (shard, digest,
    samples) for each of `shards`."""
    found = []
    for shard in shards:
        records = _spilled(store, shard, parts)
        fingerprint = rows_io.digest(records)
        old = rows_io.read_marker(store, rows_io.SOURCE, shard)
        if not old or old.get("digest") != fingerprint:
            rows_io.write_rows(store, rows_io.SOURCE, shard, records, {}, account=False)
        found.append((shard, fingerprint, len(records)))
    return found


def _spilled(store: Store, shard: int, parts: int) -> dict[str, str]:
    """{key: record} of a shard from every part's spill, in listing order."""
    records: dict[str, str] = {}
    for part in range(parts):
        try:
            text = store.read_bytes(f"{SPILLS}/{part:05d}/{shard:05d}.tsv").decode("utf-8")
        except FileNotFoundError:
            continue
        for line in text.split("\n"):  # not splitlines(): a record may hold U+2028
            if line:
                key, record = line.split("\t", 1)
                records[key] = record
    return records
