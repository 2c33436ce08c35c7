"""Builds: list the source into shards, run every stage that is missing, pack the shards.

Resume rests on per-(stage, shard) markers. A stage's fingerprint for a shard hashes its own
config with the fingerprint of the stage before it (the first stage: a digest of the shard's
source rows), so a changed config recomputes that stage and the ones after it, nothing else.
A shard's stats file records the digest of the rows it packed, so a shard is repacked exactly
when what would go into it changed.
"""

from __future__ import annotations

import collections
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from vidal.config import Config, ConfigError
from vidal.io.shards import pack_shard, read_stats, shard_name
from vidal.io.sources import SourceOptions, list_source, shard_of
from vidal.run.execute import after_column
from vidal.run.store import Store
from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

SOURCE = "source"


def digest(records: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(records):
        h.update(key.encode() + b"\t" + records[key].encode() + b"\n")
    return h.hexdigest()[:16]


def chain_fingerprint(parent: str, stage: Stage) -> str:
    return hashlib.sha256(f"{parent}|{stage.name}|{stage.config_hash()}".encode()).hexdigest()[:16]


@dataclass
class StageRun:
    """Work for one pass through the chain: these rows, from stage `start` on."""

    start: int
    rows: list[dict] = field(default_factory=list)
    shards: set[int] = field(default_factory=set)


class Builder:
    def __init__(self, config: Config, source: str | None, out: str, runner, progress=None):
        self.config, self.source, self.runner = config, source, runner
        self.store = Store(out)
        self.ctx = StageContext(out=self.store.url)
        self.progress = progress or NullProgress()
        self.stages = config.pipeline()
        self.shard_count = config.shards

    # -- rows and markers -------------------------------------------------------------------
    def rows_path(self, stage: str, shard: int) -> str:
        return f"work/{stage}/{shard:05d}.parquet"

    def marker_path(self, stage: str, shard: int) -> str:
        return f"work/{stage}/{shard:05d}.done.json"

    def read_rows(self, stage: str, shard: int) -> dict[str, str]:
        table = self.store.read_table(self.rows_path(stage, shard))
        return dict(
            zip(table.column("key").to_pylist(), table.column("record").to_pylist(), strict=False)
        )

    def write_rows(self, stage: str, shard: int, records: dict[str, str], marker: dict) -> None:
        keys = sorted(records)
        table = pa.table({"key": keys, "record": [records[k] for k in keys]})
        self.store.write_table(self.rows_path(stage, shard), table)
        self.store.write_json(
            self.marker_path(stage, shard),
            {**marker, "samples": len(keys), "digest": digest(records)},
        )

    def marker(self, stage: str, shard: int) -> dict | None:
        return self.store.read_json(self.marker_path(stage, shard))

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> dict[int, str]:
        """List the source into per-shard rows; returns each shard's source fingerprint."""
        opts = SourceOptions.from_config(self.config.source)
        previous = self.store.read_json("work/plan.json")
        if previous and previous.get("shards") != self.shard_count:
            raise ConfigError(
                f"{self.store.url} holds a build with {previous['shards']} shards; pass "
                f"--shards {previous['shards']} to continue it, or use a new --out"
            )
        fingerprints, total = {}, 0
        for shard, records in group_by_shard(list_source(self.source, opts), self.shard_count):
            fingerprints[shard] = digest(records)
            total += len(records)
            old = self.marker(SOURCE, shard)
            if not old or old.get("digest") != fingerprints[shard]:
                self.write_rows(SOURCE, shard, records, {"stage": SOURCE})
        plan = {"shards": self.shard_count, "source": self.source, "samples": total}
        self.store.write_json("work/plan.json", plan)
        return fingerprints

    def planned_fingerprints(self) -> dict[int, str]:
        """Source fingerprints of a dataset planned before (for runs without --source)."""
        plan = self.store.read_json("work/plan.json")
        if plan is None:
            raise FileNotFoundError(f"{self.store.url} has no work/plan.json: pass --source")
        if plan["shards"] != self.shard_count:
            self.shard_count = plan["shards"]
        return {
            s: (self.marker(SOURCE, s) or {}).get("digest", "") for s in range(self.shard_count)
        }

    # -- running stages ---------------------------------------------------------------------
    def run_stages(self, upto: int | None = None, retry_failed: bool = False) -> dict[int, list]:
        """Run every (stage, shard) whose marker is missing or stale; returns fingerprints.

        A dataset-level stage (one with `prepare`, e.g. dedup) needs the stages before it
        finished on every shard: the chain runs in segments split at such stages, and between
        two segments the driver calls `prepare(builder, shards)` once; its fingerprint joins
        the chain from that stage on (a change in one shard may change another's decisions)."""
        stages = self.stages[: (upto + 1) if upto is not None else None]
        sources = self.source_fingerprints
        cuts = [i for i, st in enumerate(stages) if i and callable(getattr(st, "prepare", None))]
        extra: dict[int, str] = {}
        for end in [*cuts, len(stages)]:
            chain = {s: self._chain(sources[s], stages, extra) for s in range(self.shard_count)}
            pending = collections.defaultdict(set)
            for shard, fps in chain.items():
                start = next(
                    (i for i in range(end) if not self._fresh(stages[i], shard, fps[i])), None
                )
                if start is not None:
                    pending[start].add(shard)
            for start in sorted(pending):
                self._run_from(stages[:end], start, sorted(pending[start]), chain)
            if end < len(stages):
                extra[end] = stages[end].prepare(self, list(range(self.shard_count)))
        if retry_failed:
            self._retry_failed(stages, chain)
        return chain

    def _chain(self, source_fp: str, stages: list[Stage], extra: dict | None = None) -> list[str]:
        fps, parent = [], source_fp
        for i, stage in enumerate(stages):
            parent = chain_fingerprint(parent + (extra or {}).get(i, ""), stage)
            fps.append(parent)
        return fps

    def _fresh(self, stage: Stage, shard: int, fingerprint: str) -> bool:
        marker = self.marker(stage.name, shard)
        return bool(marker) and marker.get("fingerprint") == fingerprint

    def _input_name(self, stages: list[Stage], index: int) -> str:
        return stages[index - 1].name if index > 0 else SOURCE

    def _run_from(self, stages, start, shards, chain) -> None:
        """Run stages[start:] over whole shards, in waves that bound driver memory."""
        for wave in self._waves(self._input_name(stages, start), shards):
            rows = [row for shard, records in wave for row in _rows(records, shard)]
            for stage in stages[start:]:
                for shard, _ in wave:
                    self.store.remove(self.marker_path(stage.name, shard))
                    self.store.sweep_temp(f"work/{stage.name}/{shard:05d}")
            outputs = self._execute(stages[start:], rows)
            for shard, _ in wave:
                self._persist(stages, start, shard, outputs.get(shard, []), chain[shard])

    def _waves(self, input_stage: str, shards: list[int]):
        wave, size = [], 0
        for shard in shards:
            records = self.read_rows(input_stage, shard)
            wave.append((shard, records))
            size += len(records)
            if size >= self.config.runner.wave_samples:
                yield wave
                wave, size = [], 0
        if wave:
            yield wave

    def _execute(self, stages: list[Stage], rows: list[dict]) -> dict[int, list[dict]]:
        if not rows:
            return {}
        tasks = {s.name: self.progress.add(s.name, total=len(rows)) for s in stages}
        outputs = self.runner.run(
            stages, self.ctx, rows, progress=lambda stage, n, failed: tasks[stage](n, failed)
        )
        by_shard = collections.defaultdict(list)
        for row in outputs:
            by_shard[row["shard"]].append(row)
        return by_shard

    def _persist(self, stages, start, shard, rows, fingerprints, retried=0) -> None:
        for i in range(start, len(stages)):
            name = stages[i].name
            records = {r["key"]: r[after_column(name)] for r in rows}
            if retried:
                records = {**self.read_rows(name, shard), **records}
            self.write_rows(
                name,
                shard,
                records,
                {
                    "stage": name,
                    "fingerprint": fingerprints[i],
                    "config": stages[i].config_hash(),
                    "retried": retried,
                    "finished": time.time(),
                },
            )

    def _retry_failed(self, stages, chain) -> None:
        """Re-run failed samples only, from the stage where each first failed."""
        last = stages[-1].name
        names = [s.name for s in stages]
        groups = collections.defaultdict(list)
        for shard in range(self.shard_count):
            for record in self.read_rows(last, shard).values():
                sample = Sample.from_json(record)
                first = min((names.index(st) for st in sample.errors if st in names), default=None)
                if first is not None:
                    groups[first].append((shard, sample.key))
        for start, items in sorted(groups.items()):
            inputs = collections.defaultdict(dict)
            for shard, key in items:
                source = self.read_rows(self._input_name(stages, start), shard)
                inputs[shard][key] = source[key]
            rows = [row for shard, records in inputs.items() for row in _rows(records, shard)]
            outputs = self._execute(stages[start:], rows)
            for shard in inputs:
                self._persist(
                    stages,
                    start,
                    shard,
                    outputs.get(shard, []),
                    chain[shard],
                    retried=len(inputs[shard]),
                )

    # -- packing ----------------------------------------------------------------------------
    def pack(self) -> list[dict]:
        """Pack every shard whose rows changed since it was last packed. Pack tasks read
        their rows from the store themselves, so the driver never holds a shard's records."""
        last = self.stages[-1].name
        view = self.config.pack.caption_view
        todo = []
        for shard in range(self.shard_count):
            rows_digest = (self.marker(last, shard) or {}).get("digest", "")
            fp = hashlib.sha256(f"{rows_digest}|{view}|{self.config.pack.version}".encode())
            fingerprint = fp.hexdigest()[:16]
            stats = read_stats(self.store, shard)
            if not stats or stats.get("fingerprint") != fingerprint:
                rows = self.rows_path(last, shard)
                todo.append((self.store.url, shard, rows, view, fingerprint))
        if todo:
            task = self.progress.add("pack", total=len(todo))
            self.runner.map_shards(pack_shard, todo, progress=task)
        return [read_stats(self.store, s) for s in range(self.shard_count)]

    @property
    def source_fingerprints(self) -> dict[int, str]:
        if not hasattr(self, "_source_fps"):
            self._source_fps = self.plan() if self.source else self.planned_fingerprints()
        return self._source_fps


def group_by_shard(samples, num_shards: int, flush_every: int = 100_000):
    """(shard, {key: record}) for every shard in order, holding at most `flush_every`
    records in memory: the rest wait in per-shard spill files on local disk."""
    with tempfile.TemporaryDirectory(prefix="vidal-plan-") as spill:
        buffers: dict[int, list[str]] = collections.defaultdict(list)
        held = 0
        for sample in samples:
            sample.shard = shard_of(sample.key, num_shards)
            buffers[sample.shard].append(f"{sample.key}\t{sample.to_json()}\n")
            held += 1
            if held >= flush_every:
                _spill(spill, buffers)
                held = 0
        _spill(spill, buffers)
        for shard in range(num_shards):
            path = os.path.join(spill, f"{shard}.tsv")
            if not os.path.exists(path):
                yield shard, {}
                continue
            with open(path, encoding="utf-8") as f:
                yield shard, dict(line.rstrip("\n").split("\t", 1) for line in f)


def _spill(folder: str, buffers: dict[int, list[str]]) -> None:
    for shard, lines in buffers.items():
        with open(os.path.join(folder, f"{shard}.tsv"), "a", encoding="utf-8") as f:
            f.writelines(lines)
    buffers.clear()


def _rows(records: dict[str, str], shard: int) -> list[dict]:
    return [{"key": k, "shard": shard, "record": v} for k, v in records.items()]


class NullProgress:
    def add(self, label: str, total: int) -> Callable[..., None]:
        return lambda n, failed=0: None


__all__ = ["Builder", "shard_name"]
