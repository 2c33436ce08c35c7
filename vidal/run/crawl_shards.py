"""The crawl's state, sharded like a build's: every candidate lives in shard
`shard_of(key, N)`, so the duplicates of a candidate (found by several terms, listed twice) meet
in one shard, and the driver holds O(shards) state whatever the number of candidates.

  OUT/work/crawl/layout.json                   the number of shards, fixed by the first run
  OUT/work/found/<shard>.parts/part-*.parquet  new candidates (a search wave's findings, a URL
                                               list's rows) not merged into their shard yet
  OUT/work/candidates/<shard>.parquet          every candidate of the shard with its download
                                               result: the resume state (real URLs: private)
  OUT/work/candidates/<shard>.parts/           results of a shard whose run was cut short
  OUT/work/candidates/<shard>.done.json        the shard's marker: filter fingerprint, counts
  OUT/work/crawl/published/<name>/<shard>.parquet   the shard's rows of crawl.parquet and
                                               candidates.parquet, concatenated at the end

A shard task (`crawl_shard`, run through the runner's `map_shards`) merges the shard's new
candidates into its state, re-applies the text filters, downloads what is due in checkpoints
of `crawl.wave` candidates (each a part file, so a killed shard keeps what it finished), then
writes the state and its marker through `vidal.run.rows`. A shard whose marker matches the
run's fingerprint and that has nothing new is skipped: a killed crawl redoes only unfinished
shards.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from vidal.crawl.filters import TextFilter
from vidal.io.sources import shard_of
from vidal.io.store import Store
from vidal.run import crawl as job
from vidal.run import rows as rows_io
from vidal.run.execute import process_guarded, ready_stage
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

STATE = "candidates"  # work/candidates/<shard>.parquet: the rows writer's stage name
FOUND = "found"  # work/found/<shard>.parts/: the inbox of new candidates
LAYOUT = "work/crawl/layout.json"
PUBLISHED = "work/crawl/published"


def published_path(name: str, shard: int) -> str:
    return f"{PUBLISHED}/{name}/{shard:05d}.parquet"


PER_SHARD = 10_000  # candidates per shard when the count is chosen for the crawl
MAX_AUTO_SHARDS = 1024


def num_shards(store: Store, wanted: int, expected) -> int:
    """The shard count of this crawl: the first run's, whatever later configs say (another
    count would put a candidate's duplicates in two shards). `wanted` 0 (the default) sizes
    it from the candidates the first run expects (`expected()`): ~10^4 a shard, so a list
    of 200 URLs is one shard and 10^7 candidates are 1000."""
    layout = store.read_json(LAYOUT)
    if layout:
        return int(layout["shards"])
    count = int(wanted) or min(MAX_AUTO_SHARDS, -(-int(expected()) // PER_SHARD))
    store.write_json(LAYOUT, {"shards": max(1, count)})
    return max(1, count)


class Inbox:
    """New candidates bucketed by shard and written as part files in batches. The buffer
    holds the records as JSON text (a few hundred bytes each, not Sample objects): at most
    `limit` of them, so the driver's memory is bounded and the part files stay few."""

    def __init__(self, store: Store, shards: int, limit: int = 200_000):
        self.store, self.shards, self.limit = store, shards, limit
        self.buffer: dict[int, dict[str, str]] = {}
        self.size = 0
        self.added = 0

    def add(self, samples) -> None:
        for sample in samples:
            bucket = self.buffer.setdefault(shard_of(sample.key, self.shards), {})
            known = bucket.get(sample.key)
            if known is None:
                self.size += 1
                bucket[sample.key] = sample.to_json()
            else:
                bucket[sample.key] = merged(Sample.from_json(known), sample).to_json()
            self.added += 1
            if self.size >= self.limit:
                self.flush()

    def flush(self) -> None:
        for shard, bucket in sorted(self.buffer.items()):
            keys = sorted(bucket)
            records = [bucket[k] for k in keys]
            samples = [Sample.from_json(r) for r in records]  # the rows writer's accounting
            rows_io.write_part(self.store, FOUND, shard, samples, records, [""] * len(keys))
        self.buffer, self.size = {}, 0


def merged(known: Sample, found: Sample) -> Sample:
    """A candidate met twice: the record that has been tried (downloaded or failed: a moved
    pre-sharding state, say) wins over a fresh one, with the terms of both."""
    if _tried(found) and not _tried(known):
        known, found = found, known
    gain_terms(known, found)
    return known


def _tried(sample: Sample) -> bool:
    return bool(sample.errors or sample.fields.get(job.DOWNLOAD))


def gain_terms(known: Sample, found: Sample) -> None:
    """A candidate found again keeps its state and records the new terms that found it."""
    seen = known.meta.setdefault("terms", [])
    seen.extend(t for t in found.meta.get("terms", []) if t not in seen)


# -- the shard task -----------------------------------------------------------------------------


@dataclass
class ShardJob:
    """What every shard task of one crawl run needs (pickled into each task)."""

    stage: Stage  # the download stage, configured
    rule: TextFilter
    ctx: StageContext
    retry_failed: bool = False
    wave: int = 256

    @property
    def fingerprint(self) -> str:
        text = json.dumps(asdict(self.rule), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def crawl_shard(out: str, shard: int, shard_job: ShardJob) -> dict:
    """Merge, filter, download and record one shard; returns its marker (counts)."""
    store = Store(out)
    found_parts = store.glob(f"{rows_io.parts_dir(FOUND, shard)}/*.parquet")
    state = load_state(store, shard, found_parts)
    todo = job.select(state, store, shard_job.rule, shard_job.retry_failed)
    got = 0
    if todo:
        stage = ready_stage(shard_job.stage, shard_job.ctx)
        for start in range(0, len(todo), max(1, shard_job.wave)):
            done = process_guarded(stage, todo[start : start + max(1, shard_job.wave)])
            got += checkpoint(store, shard, state, done, shard_job.rule)
    marker = finish_shard(store, shard, state, shard_job, got)
    for part in found_parts:  # only the parts merged above: they are in the state now
        store.remove(part)
    return marker


def load_state(store: Store, shard: int, found_parts: list[str]) -> dict[str, Sample]:
    """The shard's state: its rows, then the results a cut-short run checkpointed, then the
    new candidates (which join, or add their terms to a known candidate)."""
    records = rows_io.read_rows(store, STATE, shard)
    for part in store.glob(f"{rows_io.parts_dir(STATE, shard)}/*.parquet"):
        records.update(_records(store, part))
    state = {key: Sample.from_json(record) for key, record in records.items()}
    for part in found_parts:
        for key, record in _records(store, part).items():
            found = Sample.from_json(record)
            state[key] = merged(state[key], found) if key in state else found
    return state


def _records(store: Store, rel: str) -> dict[str, str]:
    table = store.read_table(rel)
    keys, records = table.column("key").to_pylist(), table.column("record").to_pylist()
    return dict(zip(keys, records, strict=True))


def checkpoint(store: Store, shard: int, state: dict, done: list[Sample], rule) -> int:
    """A finished batch into the state and a part file; returns the bytes it downloaded."""
    for sample in done:
        job.clean_downloaded_text(sample, rule)
        state[sample.key] = sample
    records = [s.to_json() for s in done]
    rows_io.write_part(store, STATE, shard, done, records, [""] * len(done))
    return sum(s.fields.get(job.DOWNLOAD, {}).get("bytes") or 0 for s in done if not s.errors)


def finish_shard(store: Store, shard: int, state: dict, shard_job: ShardJob, got: int) -> dict:
    """The shard's published rows, then its state and marker (written last: it vouches)."""
    samples = [state[k] for k in sorted(state)]
    rows = [job.candidate_row(s, store) for s in samples]
    store.write_table(published_path("candidates", shard), job._table(rows))
    manifest = [job.build_row(s) for s in samples if job.downloaded(s, store)]
    store.write_table(
        published_path("manifest", shard), job._table(manifest) if manifest else _no_rows()
    )
    counts = job.summarise(samples)
    marker = {
        "fingerprint": shard_job.fingerprint,
        "counts": counts,
        "retryable": sum(1 for s in samples if job.retryable(s)),
        "bytes_now": got,
    }
    records = {s.key: s.to_json() for s in samples}
    return rows_io.write_rows(store, STATE, shard, records, marker)


def _no_rows() -> pa.Table:
    return pa.table({"id": pa.array([], pa.string())})


# -- the driver's view --------------------------------------------------------------------------


def shards_to_run(store: Store, shards: int, fingerprint: str, retry_failed: bool) -> list[int]:
    """Shards with new candidates, a cut-short run, a changed filter, or (with
    --retry-failed) retryable failures; the others are done."""
    inbox = {_shard_of_part(p) for p in store.glob(f"work/{FOUND}/*.parts/*.parquet")}
    inbox |= {_shard_of_part(p) for p in store.glob(f"work/{STATE}/*.parts/*.parquet")}
    todo = []
    for shard in range(shards):
        marker = rows_io.read_marker(store, STATE, shard)
        if shard in inbox or (marker is not None and _stale(marker, fingerprint, retry_failed)):
            todo.append(shard)
    return todo


def _shard_of_part(rel: str) -> int:
    return int(rel.split("/")[-2].split(".", 1)[0])


def _stale(marker: dict, fingerprint: str, retry_failed: bool) -> bool:
    return marker.get("fingerprint") != fingerprint or (
        retry_failed and marker.get("retryable", 0) > 0
    )


def markers(store: Store, shards: int):
    """(shard, marker) of every shard that holds candidates."""
    for shard in range(shards):
        marker = rows_io.read_marker(store, STATE, shard)
        if marker is not None and marker.get("samples"):
            yield shard, marker


def total_counts(store: Store, shards: int) -> dict:
    """crawl.json's counts: the sum of the shards' markers."""
    total = job.summarise([])
    for _, marker in markers(store, shards):
        for name, value in marker["counts"].items():
            if isinstance(value, dict):
                total[name] = dict(Counter(total[name]) + Counter(value))
            else:
                total[name] += value
    for name in ("filtered_by_reason", "failed_by_reason"):
        total[name] = dict(Counter(total[name]).most_common())
    return total


def publish(store: Store, shards: int, name: str, rel: str, empty: pa.Table) -> None:
    """The shards' published rows concatenated into `rel`, one shard in memory at a time,
    under a schema that fits them all (a column typed differently across shards is text)."""
    parts = [published_path(name, s) for s, _ in markers(store, shards)]
    if len(parts) == 1 and store.is_local:  # one shard (a list of up to ~10^4 URLs): its
        store.copy_in(store.path(parts[0]), rel)  # file is the output; no decode, re-encode
        return
    schema = unified_schema([_schema(store, p) for p in parts])
    if schema is None or not len(schema):
        store.write_table(rel, empty)
        return
    with store.staging(rel) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for part in parts:
            writer.write_table(conform(store.read_table(part), schema))


def _schema(store: Store, rel: str) -> pa.Schema:
    with store.fs.open(store.path(rel), "rb") as f:  # the footer only, local or remote
        return pq.read_schema(f)


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema | None:
    """Each column's type promoted across shards (null and list<null> take the other
    shards' type); a column whose types do not promote becomes text."""
    if not schemas:
        return None
    found: dict[str, list[pa.Field]] = {}
    for schema in schemas:
        for f in schema:
            found.setdefault(f.name, []).append(f)
    fields = []
    for name, same in found.items():
        try:
            merged = pa.unify_schemas([pa.schema([f]) for f in same], promote_options="permissive")
            fields.append(merged.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` under `schema`: missing columns null, others cast; a value that cannot be
    cast is written as JSON text (as `_table` does within one shard)."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(len(table), f.type))
            continue
        column = table.column(f.name)
        try:
            columns.append(column.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            values = column.to_pylist()
            columns.append(
                pa.array([None if v is None else json.dumps(v, default=str) for v in values])
            )
    return pa.Table.from_arrays(columns, schema=schema)
