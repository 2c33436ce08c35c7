"""One streaming pass of a chain of stages over many shards: the pieces every runner composes.

  read_shard     a read task: one shard's input rows from the stage store, registered with the
                 tracker (how many samples will pass each stage of the chain for that shard);
  StageStep      a stage applied to a batch: reuses stored rows whose input did not change,
                 runs the stage on the rest, writes the batch's rows as a part file, reports
                 to the tracker, and finishes a (stage, shard) — rows and marker, through
                 `vidal.run.rows` — when its last sample has passed;
  ShardTracker   counts, per (stage, shard), the distinct samples that passed; says when one
                 is complete; remembers environmental failures (poison), which leave their
                 (stage, shard) and every later one unfinished.

The driver only plans (which shard starts at which stage, with which fingerprints) and waits:
it holds no records. On Ray the tracker is an actor and the steps are Ray Data operators; the
local runner calls the same functions in a loop.
"""

from __future__ import annotations

import collections
import logging
import uuid
from dataclasses import dataclass, field

import numpy as np

from vidal.io.store import Store
from vidal.run import rows as rows_io
from vidal.run.execute import process_guarded, ready_stage
from vidal.sample import Sample, error_reason
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)


_REUSE: dict[tuple[str, int], rows_io.Reuse] = {}


@dataclass
class Plan:
    """What one pass runs: `stages` (the pipeline's first stages, up to the end of a segment),
    each shard's first stage to run, and each stage's fingerprint per shard."""

    stages: list[Stage]
    starts: dict[int, int]  # shard -> index of its first stage to run
    fingerprints: dict[int, list[str]]  # shard -> fingerprint of every stage of `stages`
    retry_failed: bool = False
    pass_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def input_stage(self, start: int) -> str:
        return self.stages[start - 1].name if start > 0 else rows_io.SOURCE

    def marker(self, index: int, shard: int) -> dict:
        stage = self.stages[index]
        return {
            "fingerprint": self.fingerprints[shard][index],
            "config": stage.config_hash(),
            "retried": self.retry_failed,
        }


class ShardTracker:
    """Completion and failure bookkeeping for one pass; O(shards x stages) counters plus the
    keys of (stage, shard) pairs still in flight (so a retried task never counts twice)."""

    def __init__(self, stage_names: list[str]):
        self.names = stage_names
        self.expected: dict[tuple[int, int], int] = {}
        self.seen: dict[tuple[int, int], set[str]] = collections.defaultdict(set)
        self.poisoned: dict[int, int] = {}  # shard -> first stage index poisoned
        self.causes: collections.Counter = collections.Counter()  # "stage: reason" -> samples
        self.examples: dict[str, str] = {}  # "stage: reason" -> one full message
        self.counts: dict[str, list[int]] = {}  # stage -> [done, failed] for progress

    def expect(self, shard: int, start: int, count: int) -> None:
        for i in range(start, len(self.names)):
            self.expected[(i, shard)] = count

    def report(self, index: int, shard: int, keys: list[str], failed: int, causes: list[str]):
        """Record a batch; True when it completed the (stage, shard) and it may be finished."""
        done = self.seen[(index, shard)]
        new = len(set(keys) - done)
        done.update(keys)
        total = self.counts.setdefault(self.names[index], [0, 0])
        total[0] += new
        total[1] += failed if new else 0
        if causes:
            self.poison(index, shard, causes)
        if len(done) < self.expected.get((index, shard), 0):
            return False
        del self.seen[(index, shard)]
        return self.poisoned.get(shard, len(self.names)) > index

    def poison(self, index: int, shard: int, causes: list[str]) -> None:
        """`causes`: "stage: reason: detail" messages of environmental failures."""
        self.poisoned[shard] = min(index, self.poisoned.get(shard, index))
        for message in causes:
            cause = error_reason(message)
            self.causes[cause] += 1
            self.examples.setdefault(cause, message)

    def expected_count(self, index: int, shard: int) -> int:
        return self.expected.get((index, shard), 0)

    def snapshot(self) -> dict[str, list[int]]:
        return self.counts

    def failure(self) -> dict:
        return {
            "poisoned": dict(self.poisoned),
            "causes": dict(self.causes),
            "examples": dict(self.examples),
        }


def _call(tracker, method: str, *args):
    """Call the tracker whether it is a local object or a Ray actor handle."""
    fn = getattr(tracker, method)
    remote = getattr(fn, "remote", None)
    if remote is None:
        return fn(*args)
    import ray  # only reached on Ray, where the runner imported it already

    return ray.get(remote(*args))


def read_shard(item: dict, out: str, plan: Plan, tracker) -> dict:
    """A read task: the input rows of one shard, as a batch of columns."""
    store, shard, start = Store(out), int(item["shard"]), int(item["start"])
    for index in range(start, len(plan.stages)):
        rows_io.invalidate(store, plan.stages[index].name, shard)
    records = rows_io.read_rows(store, plan.input_stage(start), shard)
    _call(tracker, "expect", shard, start, len(records))
    if not records:  # nothing will pass: the (stage, shard) pairs are finished empty here
        for index in range(start, len(plan.stages)):
            rows_io.write_rows(store, plan.stages[index].name, shard, {}, plan.marker(index, shard))
    keys = sorted(records)
    return {
        "key": np.array(keys, dtype=object),
        "shard": np.full(len(keys), shard, dtype=np.int64),
        "start": np.full(len(keys), start, dtype=np.int64),
        "record": np.array([records[k] for k in keys], dtype=object),
    }


@dataclass
class StageStep:
    """Stage `index` of `plan` applied to batches (a Ray Data map function or a local call).
    Rows whose shard starts after this stage pass through untouched."""

    plan: Plan
    index: int
    ctx: StageContext
    tracker: object = None

    @property
    def stage(self) -> Stage:
        return self.plan.stages[self.index]

    def __call__(self, batch: dict) -> dict:
        records = list(batch["record"])
        active = [i for i, s in enumerate(batch["start"]) if int(s) <= self.index]
        if active:
            items = [(int(batch["shard"][i]), batch["key"][i], records[i]) for i in active]
            for i, out in zip(active, self._run(items), strict=True):
                records[i] = out
        return {**batch, "record": np.array(records, dtype=object)}

    def _run(self, items: list[tuple[int, str, str]]) -> list[str]:
        stage, store = self.stage, Store(self.ctx.out)
        reuse = self._reuse(store)
        given = [Sample.from_json(r) for _, _, r in items]
        inputs = [rows_io.sample_digest(s) for s in given]
        outputs: list[Sample | None] = []
        for (shard, key, _), sample, digest in zip(items, given, inputs, strict=True):
            old = reuse.get(shard, key, digest)
            outputs.append(rows_io.reused(old, sample, stage.name) if old else None)
        todo = [s for s, out in zip(given, outputs, strict=True) if out is None]
        if todo:
            done = {s.key: s for s in process_guarded(ready_stage(stage, self.ctx), todo)}
            outputs = [out or done[s.key] for s, out in zip(given, outputs, strict=True)]
        records = [s.to_json() for s in outputs]
        self._persist(store, [s for s, _, _ in items], outputs, records, inputs)
        return records

    def _reuse(self, store: Store) -> rows_io.Reuse:
        """One per (pass, stage) in this process: Ray deserialises the step once per task, and
        the stored rows it looks up should be read once per worker, not once per task."""
        key = (self.plan.pass_id, self.index)
        if key not in _REUSE:
            while len(_REUSE) >= 8:
                _REUSE.pop(next(iter(_REUSE)))
            stage = self.stage
            _REUSE[key] = rows_io.Reuse(
                store, stage.name, stage.config_hash(), self.plan.retry_failed
            )
        return _REUSE[key]

    def _persist(self, store: Store, shards, samples: list[Sample], records, inputs) -> None:
        by_shard = collections.defaultdict(list)
        for row in zip(shards, samples, records, inputs, strict=True):
            by_shard[row[0]].append(row[1:])
        name = self.stage.name
        for shard, rows in by_shard.items():
            part = [s for s, _, _ in rows]
            rows_io.write_part(
                store, name, shard, part, [r for _, r, _ in rows], [i for *_, i in rows]
            )
            causes = [
                f"{name}: {s.errors[name]}"
                for s in part
                if name in s.errors and self.stage.environmental(s.errors[name])
            ]
            failed = sum(name in s.errors for s in part)
            keys = [s.key for s in part]
            if _call(self.tracker, "report", self.index, shard, keys, failed, causes):
                self._finish(store, shard)

    def _finish(self, store: Store, shard: int) -> None:
        expected = _call(self.tracker, "expected_count", self.index, shard)
        marker = self.plan.marker(self.index, shard)
        if rows_io.finish(store, self.stage.name, shard, expected, marker) is None:
            log.warning("%s shard %d: parts incomplete, left for a rerun", self.stage.name, shard)
