"""One streaming pass of a chain of stages over many shards: the pieces every runner composes.

  read_shard     a read task: one shard's input rows from the stage store, registered with the
                 tracker (how many samples will pass each stage of the chain for that shard);
  StageStep      a stage applied to a batch: reuses stored rows whose input did not change,
                 runs the stage on the rest, reports to the tracker, and finishes a (stage,
                 shard) — rows and marker, through `vidal.run.rows` — when its last sample has
                 passed: a shard the block holds whole from the rows kept as they passed, a
                 part of one (a block Ray split) from a part file per chunk;
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
from vidal.sample import Sample, body_digest, error_reason
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

    def first_start(self) -> int:
        """The earliest stage any shard of the pass starts at (the ones before are done)."""
        return min(self.starts.values(), default=0)

    def stages_to_run(self) -> list[Stage]:
        """The stages some shard of the pass runs."""
        return self.stages[self.first_start() :]

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

    def report_all(self, reports: list[tuple]) -> list[tuple[int, int, int]]:
        """Record a step's batch: (index, shard, keys, failed, causes) per stage and shard.
        Returns the (index, shard, expected samples) it completed: they may be finished."""
        return [
            (index, shard, self.expected_count(index, shard))
            for index, shard, *rest in reports
            if self.report(index, shard, *rest)
        ]

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

    def absorb(self, failure: dict) -> None:
        """Another tracker's `failure()` (a worker's, for its shard) added to this one's."""
        for shard, index in failure["poisoned"].items():
            self.poisoned[shard] = min(index, self.poisoned.get(shard, index))
        self.causes.update(failure["causes"])
        for cause, example in failure["examples"].items():
            self.examples.setdefault(cause, example)

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


def _tell(tracker, method: str, *args):
    """Call the tracker without waiting for its answer: on Ray, the reference to wait on
    (`_wait`) before the task ends, so the driver never reads the tracker before a finished
    task's reports have reached it."""
    fn = getattr(tracker, method)
    remote = getattr(fn, "remote", None)
    return fn(*args) if remote is None else remote(*args)


def _wait(told: list) -> None:
    refs = [t for t in told if type(t).__name__ == "ObjectRef"]
    if refs:
        import ray  # only reached on Ray, where the runner imported it already

        ray.get(refs)


def _call(tracker, method: str, *args):
    """Call the tracker whether it is a local object or a Ray actor handle."""
    fn = getattr(tracker, method)
    remote = getattr(fn, "remote", None)
    if remote is None:
        return fn(*args)
    import ray  # only reached on Ray, where the runner imported it already

    return ray.get(remote(*args))


def read_shard(item: dict, out: str, plan: Plan, tracker) -> dict:
    """A read task: the stale rows of the stages the shard reruns invalidated, the tracker told
    how many samples will pass each of them, and the shard's input rows, as a batch of columns
    in key order (none: the (stage, shard) pairs are finished empty here)."""
    store, shard, start = Store(out), int(item["shard"]), int(item["start"])
    for index in range(start, len(plan.stages)):
        rows_io.invalidate(store, plan.stages[index].name, shard)
    records = rows_io.read_rows(store, plan.input_stage(start), shard)
    _call(tracker, "expect", shard, start, len(records))
    if not records:
        for index in range(start, len(plan.stages)):
            rows_io.write_rows(store, plan.stages[index].name, shard, {}, plan.marker(index, shard))
    keys = sorted(records)
    return {
        "key": np.array(keys, dtype=object),
        "shard": np.full(len(keys), shard, dtype=np.int64),
        "start": np.full(len(keys), start, dtype=np.int64),
        "count": np.full(len(keys), len(keys), dtype=np.int64),  # the whole shard's size
        "poisoned": np.full(len(keys), len(plan.stages), dtype=np.int64),  # none yet
        "record": np.array([records[k] for k in keys], dtype=object),
    }


def run_shard(plan: Plan, ctx: StageContext, item: dict, steps: list, tracker, after=None):
    """One shard through every step of the pass in this process (the in-process runners):
    read, then each step that reaches the shard's first stage; `after()` after each step."""
    batch = read_shard(item, ctx.out, plan, tracker)
    for step in steps:
        if step.span[-1] < item["start"]:
            continue
        batch = step(batch)  # the whole shard: the step batches each stage
        if after is not None:
            after()


def _whole_shards(shards: list[int], counts) -> set[int]:
    """The shards of a block that hold every row of their shard (`counts`: each row's shard
    size, as read): a step writes their rows as they pass, with no part files."""
    if counts is None:
        return set()
    held = collections.Counter(shards)
    return {s for s, n in zip(shards, counts, strict=True) if held[s] == int(n)}


def _by_shard(shards: list[int]) -> list[list[int]]:
    """The positions of each shard's rows in a block, in block order (key order)."""
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for position, shard in enumerate(shards):
        groups[shard].append(position)
    return list(groups.values())


def spans(stages: list[Stage], first: int = 0) -> list[range]:
    """The steps of a pass: runs of consecutive CPU stages with the same resources go together
    (one task parses a batch once and runs them all: the samples stay objects between them),
    each model stage alone (its actor pool)."""
    out: list[range] = []
    for index in range(first, len(stages)):
        prev = out[-1] if out else None
        if prev is not None and _fusable(stages[prev[-1]], stages[index]):
            out[-1] = range(prev.start, index + 1)
        else:
            out.append(range(index, index + 1))
    return out


def _fusable(a: Stage, b: Stage) -> bool:
    same = ("num_cpus", "concurrency", "resources")
    return not (a.uses_model or b.uses_model) and all(getattr(a, f) == getattr(b, f) for f in same)


@dataclass
class StageStep:
    """Stages `span` of `plan` applied to a block of rows, whole shards (a Ray Data map function
    or a local call), in chunks of the stages' largest `batch_size`, each stage in batches of
    its own, all cut within a shard in key order (`_chunks`): which samples share a model
    batch, and so the floating-point results of a batched model, never depends on which other
    shards were in flight or on a resume. A sample is parsed once per chunk and encoded once
    per stage (its row in that stage's store); rows whose shard starts after a stage pass
    through it untouched.

    A shard the block holds whole (the usual case: one read block per shard) has its rows
    written as they pass (`rows_io.RowsWriter`); a partial one (a block Ray split) writes a
    part file per chunk, compacted when the tracker says its last sample has passed."""

    plan: Plan
    span: range
    ctx: StageContext
    tracker: object = None

    @property
    def stages(self) -> list[Stage]:
        return [self.plan.stages[i] for i in self.span]

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.stages)

    def __call__(self, batch: dict) -> dict:
        store, records = Store(self.ctx.out), list(batch["record"])
        shards, starts = [int(s) for s in batch["shard"]], [int(s) for s in batch["start"]]
        whole = _whole_shards(shards, batch.get("count"))
        poisoned = [int(p) for p in batch.get("poisoned", [len(self.plan.stages)] * len(shards))]
        told: list = []  # tracker calls in flight (a whole shard's reports need no answer)
        for positions in _by_shard(shards):
            shard, before = shards[positions[0]], poisoned[positions[0]]
            if shard in whole:
                after = self._whole(store, positions, shard, starts, records, before, told)
            else:
                after = min(
                    self._piece(store, c, shard, starts, records) for c in self._chunks(positions)
                )
                after = min(after, before)
            for i in positions:
                poisoned[i] = after
        _wait(told)
        return {
            **batch,
            "record": np.array(records, dtype=object),
            "poisoned": np.array(poisoned, dtype=np.int64),
        }

    def _chunks(self, positions: list[int]):
        """A shard's rows (positions in key order) in chunks of the stages' largest batch,
        cut from its first key: the same chunks in every run."""
        size = max(1, max(s.batch_size for s in self.stages))
        for start in range(0, len(positions), size):
            yield positions[start : start + size]

    def _whole(self, store, positions, shard: int, starts, records, poisoned: int, told) -> int:
        """A shard the block holds whole: its rows kept as they pass and written once per stage
        at the end, unless an environmental failure (here or in an earlier step: `poisoned`,
        the first stage it hit) leaves that stage and the later ones unfinished. The tracker
        hears every chunk (progress, failures) without being waited on. Returns the first
        poisoned stage (len(stages) when none)."""
        writers: dict[int, rows_io.RowsWriter] = {}  # stage index -> this shard's rows
        for chunk in self._chunks(positions):
            reports = self._stages(store, chunk, shard, starts, records, writers)
            poisoned = min([poisoned, *(r[0] for r in reports if r[4])])
            told.append(_tell(self.tracker, "report_all", reports))
        for index, writer in writers.items():
            marker = self.plan.marker(index, shard)
            if index < poisoned and writer.commit(store, len(positions), marker) is None:
                log.warning("%s shard %d: rows out of order, left for a rerun", writer.stage, shard)
        return poisoned

    def _piece(self, store: Store, chunk: list[int], shard: int, starts, records: list) -> int:
        """A chunk of a shard the block holds only part of (a block Ray split): a part file
        per stage, and the stages the tracker says every sample has passed are finished.
        Returns the first stage an environmental failure hit (len(stages) when none)."""
        reports = self._stages(store, chunk, shard, starts, records, None)
        for index, shard, expected in _call(self.tracker, "report_all", reports):
            self._finish(store, index, shard, expected)
        return min([len(self.plan.stages), *(r[0] for r in reports if r[4])])

    def _stages(self, store: Store, chunk: list[int], shard: int, starts, records: list, writers):
        """Every stage of the step over the rows at positions `chunk` (all of `shard`),
        updating `records`; rows kept (`writers`, for a whole shard) or a part written.
        Returns the tracker's reports, one per stage the chunk reached."""
        samples: dict[int, Sample] = {}  # position -> the sample as it stands
        bodies: dict[int, str] = {}  # position -> its JSON without lineage
        reports = []
        for index in self.span:
            active = [i for i in chunk if starts[i] <= index]
            for i in active:
                if i not in samples:
                    samples[i] = Sample.from_json(records[i])
                    bodies[i] = samples[i].encode()[1]
            if not active:
                continue
            inputs = [body_digest(bodies[i]) for i in active]
            outputs = self._run(store, index, shard, [samples[i] for i in active], inputs)
            for i, (out, (record, body)) in zip(active, outputs, strict=True):
                samples[i], records[i], bodies[i] = out, record, body
            done = [samples[i] for i in active]
            kept = [records[i] for i in active]
            reports.append(self._persist(store, index, shard, done, kept, inputs, writers))
        return reports

    def _run(self, store: Store, index: int, shard: int, given: list[Sample], inputs) -> list:
        """Stage `index` on `given` (samples of `shard`, in key order; their input digests
        `inputs`): stored outputs whose input did not change are reused, the rest computed in
        batches of the stage's size. Returns (sample, (record, body))s."""
        stage, reuse = self.plan.stages[index], self._reuse(store, index)
        outputs: list[Sample | None] = []
        for sample, digest in zip(given, inputs, strict=True):
            old = reuse.get(shard, sample.key, digest)
            outputs.append(rows_io.reused(old, sample, stage.name) if old else None)
        todo = [s for s, out in zip(given, outputs, strict=True) if out is None]
        if todo:
            ready, size, done = ready_stage(stage, self.ctx), max(1, stage.batch_size), {}
            for start in range(0, len(todo), size):
                done.update((s.key, s) for s in process_guarded(ready, todo[start : start + size]))
            outputs = [out or done[s.key] for s, out in zip(given, outputs, strict=True)]
        return [(s, s.encode()) for s in outputs]

    def _reuse(self, store: Store, index: int) -> rows_io.Reuse:
        """One per (pass, stage) in this process: Ray deserialises the step once per task, and
        the stored rows it looks up should be read once per worker, not once per task."""
        key = (self.plan.pass_id, index)
        if key not in _REUSE:
            while len(_REUSE) >= 16:
                _REUSE.pop(next(iter(_REUSE)))
            stage = self.plan.stages[index]
            _REUSE[key] = rows_io.Reuse(
                store, stage.name, stage.config_hash(), self.plan.retry_failed
            )
        return _REUSE[key]

    def _persist(self, store, index: int, shard: int, part: list[Sample], records, inputs, writers):
        """Stage `index`'s rows for a chunk of `shard` (its samples, their records and input
        digests): kept in the shard's writer, or a part file when `writers` is None. Returns
        the tracker's report (index, shard, keys, failed, causes)."""
        name = self.plan.stages[index].name
        if writers is None:
            rows_io.write_part(store, name, shard, part, records, inputs)
        else:
            if index not in writers:
                config = self.plan.marker(index, shard)["config"]
                writers[index] = rows_io.RowsWriter(name, shard, config)
            writers[index].add(part, records, inputs)
        errors = [s.errors[name] for s in part if name in s.errors]
        causes = [f"{name}: {e}" for e in errors if self.plan.stages[index].environmental(e)]
        return (index, shard, [s.key for s in part], len(errors), causes)

    def _finish(self, store: Store, index: int, shard: int, expected: int) -> None:
        stage, marker = self.plan.stages[index], self.plan.marker(index, shard)
        if rows_io.finish(store, stage.name, shard, expected, marker) is None:
            log.warning("%s shard %d: parts incomplete, left for a rerun", stage.name, shard)
