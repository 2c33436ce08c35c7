"""The one writer of stage rows and markers. Nothing else writes under `work/<stage>/` except a
stage's own payloads (`work/<stage>/<shard>/...`) and model-load records.

Per (stage, shard):
  work/<stage>/<shard>.parts/part-*.parquet   what workers wrote while the shard was in flight
  work/<stage>/<shard>.parquet                 a row per sample: key, record (the Sample's JSON
                                               as the stage left it), input (digest of the
                                               record it got), failed (the stage failed it)
  work/<stage>/<shard>.done.json               the marker, written last: it vouches for the rows

A stage's output depends on its input record without the lineage (which records how earlier
stages ran, not what they produced), so inserting or re-deciding an earlier dataset-level stage
does not make every later stage recompute: `input` is the digest of that body
(`Sample.encode`, `body_digest`).

A rows file stays in place while its (stage, shard) reruns: a rerun reuses the stored output of
every sample whose input and stage config are unchanged (see `Reuse`), so changing a
dataset-level decision (dedup, refilter) or retrying failures computes only the samples whose
input changed. Part files have unique names and are compacted by key, so a task that Ray
retries after a worker died never counts a sample twice.
"""

from __future__ import annotations

import collections
import hashlib
import io
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from vidal.io.store import Store
from vidal.sample import Sample, error_reason

SOURCE = "source"
CONFIG_META = b"vidal.config"
ROWS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("record", pa.string()),
        ("input", pa.string()),  # digest of the record the stage got (vidal.sample.body_digest)
        ("failed", pa.bool_()),  # the stage failed the sample
        ("reached", pa.bool_()),  # the sample reached the stage ok (or failed / dropped here)
        ("reason", pa.string()),  # "stage: reason" of a failure here, or the drop reason here
    ]
)


def rows_path(stage: str, shard: int) -> str:
    return f"work/{stage}/{shard:05d}.parquet"


def marker_path(stage: str, shard: int) -> str:
    return f"work/{stage}/{shard:05d}.done.json"


def parts_dir(stage: str, shard: int) -> str:
    return f"work/{stage}/{shard:05d}.parts"


def decision_path(stage: str, name: str) -> str:
    """Where a dataset-level stage keeps its decision files (work/<stage>/<name>)."""
    return f"work/{stage}/{name}"


def digest(records: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(records):
        _digest_row(h, key, records[key])
    return h.hexdigest()[:16]


def _digest_row(h, key: str, record: str) -> None:
    h.update(key.encode() + b"\t" + record.encode() + b"\n")


def reused(stored: str, given: Sample, stage: str) -> Sample:
    """A stored output taken for `given`: its lineage is the input's plus the stage's own."""
    sample = Sample.from_json(stored)
    own = sample.lineage.get(stage)
    sample.lineage = {**given.lineage, **({stage: own} if own is not None else {})}
    return sample


# -- reading ------------------------------------------------------------------------------------
def read_marker(store: Store, stage: str, shard: int) -> dict | None:
    return store.read_json(marker_path(stage, shard))


def read_table(store: Store, stage: str, shard: int) -> pa.Table | None:
    try:
        return store.read_table(rows_path(stage, shard))
    except FileNotFoundError:
        return None


def read_rows(store: Store, stage: str, shard: int) -> dict[str, str]:
    """{key: record} of a finished (stage, shard); {} when it has no rows."""
    table = read_table(store, stage, shard)
    if table is None:
        return {}
    return dict(
        zip(table.column("key").to_pylist(), table.column("record").to_pylist(), strict=True)
    )


def iter_samples(store: Store, stage: str, shards):
    """Every sample of `stage`'s rows in `shards`, one shard's table in memory at a time."""
    for shard in shards:
        for record in read_rows(store, stage, shard).values():
            yield Sample.from_json(record)


# -- writing ------------------------------------------------------------------------------------
def facts(sample: Sample, stage: str) -> tuple[bool, bool, str | None]:
    """(failed here, reached, reason here) of a sample as `stage` left it, for the accounting
    the marker carries (the driver sums markers; it never reads rows)."""
    message = sample.errors.get(stage)
    if message is not None:
        return True, True, error_reason(f"{stage}: {message}")
    if sample.dropped_by == stage:
        return False, True, "dropped " + str(sample.dropped).split(":")[0]
    return False, sample.ok, None


def _table(keys, records, inputs, facts_, config: str | None) -> pa.Table:
    failed, reached, reason = (list(c) for c in zip(*facts_, strict=True)) if facts_ else ([],) * 3
    columns = [keys, records, inputs, failed, reached, reason]
    table = pa.table(dict(zip(ROWS_SCHEMA.names, columns, strict=True)), schema=ROWS_SCHEMA)
    return table.replace_schema_metadata({CONFIG_META: (config or "").encode()})


def write_part(store: Store, stage: str, shard: int, samples: list[Sample], records, inputs):
    """One batch's output for one shard (`records`: the samples' JSON), under a unique name:
    a retried task adds a twin, which compaction drops. Parts skip fsync: a crash loses the
    run they belong to, and the next run clears them."""
    keys = [s.key for s in samples]
    table = _table(keys, records, inputs, [facts(s, stage) for s in samples], None)
    rel = f"{parts_dir(stage, shard)}/part-{uuid.uuid4().hex}.parquet"
    store.write_table(rel, table, durable=False)


def invalidate(store: Store, stage: str, shard: int) -> None:
    """Before a (stage, shard) reruns: its marker and any parts a killed run left go; the rows
    stay, for reuse, until the rerun finishes and replaces them."""
    store.remove(marker_path(stage, shard))
    store.remove(parts_dir(stage, shard), recursive=True)
    store.sweep_temp(f"work/{stage}", prefix=f".{shard:05d}.")
    store.sweep_temp(f"work/{stage}/{shard:05d}")


def finish(store: Store, stage: str, shard: int, expected: int, marker: dict) -> dict | None:
    """Compact the parts of a (stage, shard) whose every sample has passed into its rows file,
    then write the marker. None (and nothing written) if the parts hold fewer samples than
    `expected`: the (stage, shard) stays unfinished and a rerun redoes it."""
    tables = [store.read_table(p) for p in store.glob(f"{parts_dir(stage, shard)}/*.parquet")]
    merged = pa.concat_tables([t.replace_schema_metadata(None) for t in tables] or [_empty()])
    latest: dict[str, int] = {k: i for i, k in enumerate(merged.column("key").to_pylist())}
    if len(latest) != expected:
        return None
    order = sorted(latest)
    table = merged.take([latest[k] for k in order])
    return write_rows_table(store, stage, shard, table, marker)


def write_rows(
    store: Store, stage: str, shard: int, records: dict[str, str], marker: dict, account=True
):
    """Rows given whole (the source listing, an empty shard). `account=False` skips the
    accounting columns (no JSON parse a row): the source listing is no stage to audit."""
    keys = sorted(records)
    recs = [records[k] for k in keys]
    plain = (False, True, None)
    found = [facts(Sample.from_json(r), stage) if account else plain for r in recs]
    table = _table(keys, recs, [""] * len(keys), found, None)
    return write_rows_table(store, stage, shard, table, marker)


def write_rows_table(store: Store, stage: str, shard: int, table: pa.Table, marker: dict) -> dict:
    config = str(marker.get("config", ""))
    table = table.replace_schema_metadata({CONFIG_META: config.encode()})
    store.write_table(rows_path(stage, shard), table)
    records = dict(
        zip(table.column("key").to_pylist(), table.column("record").to_pylist(), strict=True)
    )
    accounts = Accounts().add(table)
    full = _write_marker(store, stage, shard, marker, len(records), digest(records), accounts)
    store.remove(parts_dir(stage, shard), recursive=True)
    return full


def _write_marker(store, stage: str, shard: int, marker: dict, samples: int, digest_, accounts):
    """The marker, written last: it vouches for the rows file written before it."""
    full = {
        **marker,
        "stage": stage,
        "samples": samples,
        "digest": digest_,
        **accounts.figures(),
        "finished": time.time(),
    }
    store.write_json(marker_path(stage, shard), full)
    return full


class RowsWriter:
    """The rows of a (stage, shard) whose every sample passes through one task (a step given
    the whole shard): each chunk is appended to an in-memory parquet file as it passes, with
    the digest and the marker's accounting built on the way, so finishing writes the rows and
    the marker without part files, without reading anything back. Chunks must come in key
    order (a shard's rows are read sorted); `commit` refuses anything else."""

    def __init__(self, stage: str, shard: int, config: str):
        self.stage, self.shard, self.config = stage, shard, config
        self.buffer = io.BytesIO()
        schema = ROWS_SCHEMA.with_metadata({CONFIG_META: config.encode()})
        self.writer = pq.ParquetWriter(self.buffer, schema, compression="zstd")
        self.hash, self.accounts = hashlib.sha256(), Accounts()
        self.rows, self.last_key, self.in_order = 0, None, True

    def add(self, samples: list[Sample], records: list[str], inputs: list[str]) -> None:
        keys = [s.key for s in samples]
        for key, record in zip(keys, records, strict=True):
            self.in_order &= self.last_key is None or key > self.last_key
            self.last_key = key
            _digest_row(self.hash, key, record)
        table = _table(keys, records, inputs, [facts(s, self.stage) for s in samples], None)
        self.writer.write_table(table.replace_schema_metadata(None))
        self.accounts.add(table)
        self.rows += len(keys)

    def commit(self, store: Store, expected: int, marker: dict) -> dict | None:
        """The rows file and then the marker, if the chunks held `expected` rows in key order
        (else None and nothing written: the (stage, shard) stays unfinished for a rerun)."""
        self.writer.close()
        if self.rows != expected or not self.in_order:
            return None
        store.write_bytes(rows_path(self.stage, self.shard), self.buffer.getvalue())
        digest_ = self.hash.hexdigest()[:16]
        return _write_marker(
            store, self.stage, self.shard, marker, self.rows, digest_, self.accounts
        )


def _empty() -> pa.Table:
    return _table([], [], [], [], None)


class Accounts:
    """What a (stage, shard) did, from its rows' accounting columns: samples that reached the
    stage, failed there (by reason), dropped there (by reason); and how many it failed."""

    def __init__(self):
        self.reached, self.failed_rows = 0, 0
        self.failed, self.dropped = collections.Counter(), collections.Counter()

    def add(self, table: pa.Table) -> Accounts:
        failed = table.column("failed").to_pylist()
        for is_failed, reason in zip(failed, table.column("reason").to_pylist(), strict=True):
            if reason is None:
                continue
            if is_failed:
                self.failed[reason] += 1
            else:
                self.dropped[reason.removeprefix("dropped ")] += 1
        self.failed_rows += int(sum(failed))
        self.reached += int(sum(table.column("reached").to_pylist()))
        return self

    def figures(self) -> dict:
        """The marker's fields: `failed` (rows) and `audit`."""
        audit = {"reached": self.reached, "failed": dict(self.failed)}
        return {"failed": self.failed_rows, "audit": {**audit, "dropped": dict(self.dropped)}}


# -- reuse --------------------------------------------------------------------------------------
class Reuse:
    """The stored output of a (stage, shard), looked up by key: a sample whose input record
    and stage config are what they were when its row was written gets that row back instead
    of being recomputed. With `retry_failed`, rows the stage failed are never reused."""

    def __init__(self, store: Store, stage: str, config: str, retry_failed: bool = False):
        self.store, self.stage, self.config = store, stage, config
        self.retry_failed = retry_failed
        self._tables: collections.OrderedDict[int, dict] = collections.OrderedDict()

    def get(self, shard: int, key: str, input_digest: str) -> str | None:
        row = self._shard(shard).get(key)
        if row is None or row[0] != input_digest:
            return None
        return row[1]

    def _shard(self, shard: int) -> dict:
        if shard in self._tables:
            self._tables.move_to_end(shard)
            return self._tables[shard]
        rows = self._load(shard)
        self._tables[shard] = rows
        while len(self._tables) > 4:  # a worker sees few shards at once: bound the memory
            self._tables.popitem(last=False)
        return rows

    def _load(self, shard: int) -> dict:
        table = read_table(self.store, self.stage, shard)
        meta = (table.schema.metadata or {}) if table is not None else {}
        if table is None or meta.get(CONFIG_META, b"").decode() != self.config:
            return {}
        cols = [table.column(c).to_pylist() for c in ("key", "input", "record", "failed")]
        return {
            key: (inp, rec)
            for key, inp, rec, failed in zip(*cols, strict=True)
            if inp and not (failed and self.retry_failed)
        }
