"""Builds: list the source into shards, run every stage that is missing, pack the shards.

Resume rests on per-(stage, shard) markers (vidal.run.rows). A stage's fingerprint for a shard
hashes its own config with the fingerprint of the stage before it (the first stage: a digest of
the shard's source rows), so a changed config recomputes that stage and the ones after it,
nothing else; within a recomputed (stage, shard), samples whose input did not change reuse
their stored output.

The chain runs as one streaming pass per segment (vidal.run.stream): a segment ends only at a
dataset-level stage (`DatasetStage`: dedup, refilter), whose decision over every shard's rows
the driver makes between two passes and mixes into the fingerprints of the stages from it on.
The driver holds O(shards) state: fingerprints, starts, marker reads; never records.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from vidal.config import Config, ConfigError
from vidal.io.shards import pack_shard, read_stats, shard_name
from vidal.io.sources import SourceOptions
from vidal.io.store import Store
from vidal.run import rows as rows_io
from vidal.run.execute import LocalRunner
from vidal.run.plan import plan_source
from vidal.run.stream import Plan
from vidal.stages.base import Stage, StageContext
from vidal.stages.decision import DatasetStage
from vidal.stages.media_pass import plan_media_pass

log = logging.getLogger(__name__)
SOURCE = rows_io.SOURCE
digest = rows_io.digest


class BuildIncomplete(RuntimeError):
    """Some (stage, shard) pairs could not finish for a reason that is not the samples' fault
    (ffmpeg missing, a model that cannot load, a lost worker): the message says which and
    that a plain rerun redoes them."""


def chain_fingerprint(parent: str, stage: Stage) -> str:
    return hashlib.sha256(f"{parent}|{stage.name}|{stage.config_hash()}".encode()).hexdigest()[:16]


class Builder:
    def __init__(self, config: Config, source: str | None, out: str, runner, progress=None):
        self.config, self.source, self.runner = config, source, runner
        self.store = Store(out)
        private = config.source.allow_private_addresses  # the URL policy's switch (vidal.net)
        self.ctx = StageContext(out=self.store.url, allow_private_addresses=private)
        self.progress = progress or NullProgress()
        self.stages = config.pipeline()
        self.shard_count = config.shards

    # -- rows and markers (read-only here: vidal.run.rows writes them) ------------------------
    def read_rows(self, stage: str, shard: int) -> dict[str, str]:
        return rows_io.read_rows(self.store, stage, shard)

    def marker(self, stage: str, shard: int) -> dict | None:
        return rows_io.read_marker(self.store, stage, shard)

    # -- planning ---------------------------------------------------------------------------
    def plan(self) -> dict[int, str]:
        """List the source into per-shard rows (a map/reduce pass in the runner's workers:
        vidal.run.plan); returns each shard's source fingerprint."""
        opts = SourceOptions.from_config(self.config.source)
        previous = self.store.read_json("work/plan.json")
        if previous and previous.get("shards") != self.shard_count:
            raise ConfigError(
                f"{self.store.url} holds a build with {previous['shards']} shards; pass "
                f"--shards {previous['shards']} to continue it, or use a new --out"
            )
        runner, shards = self.runner or LocalRunner(), self.shard_count
        fingerprints, total = plan_source(
            self.store, self.source, opts, shards, runner, progress=self.progress
        )
        plan = {"shards": self.shard_count, "source": self.source, "samples": total}
        self.store.write_json("work/plan.json", plan)
        return fingerprints

    def planned_fingerprints(self) -> dict[int, str]:
        """Source fingerprints of a dataset planned before (for runs without --source)."""
        plan = self.store.read_json("work/plan.json")
        if plan is None:
            raise FileNotFoundError(f"{self.store.url} has no work/plan.json: pass --source")
        self.shard_count = plan["shards"]
        return {
            s: (self.marker(SOURCE, s) or {}).get("digest", "") for s in range(self.shard_count)
        }

    # -- running stages ---------------------------------------------------------------------
    def run_stages(self, upto: int | None = None, retry_failed: bool = False) -> dict:
        """Run every (stage, shard) whose marker is missing or stale (with `retry_failed`,
        also every one that failed samples); returns each shard's fingerprints."""
        # the one media pass writes only what this run's stages produce (media_pass's rule)
        stages = plan_media_pass(self.stages[: (upto + 1) if upto is not None else None])
        sources = self.source_fingerprints
        cuts = [i for i, st in enumerate(stages) if i and isinstance(st, DatasetStage)]
        decisions: dict[int, str] = {}
        for end in [*cuts, len(stages)]:
            chain = {s: self._chain(sources[s], stages, decisions) for s in sources}
            self.chain = chain  # what pack checks markers against, even if a pass fails
            starts = self._starts(stages[:end], chain, retry_failed)
            if starts:
                self._pass(Plan(stages[:end], starts, chain, retry_failed))
            if end < len(stages):
                decisions[end] = self._decide(stages[end], stages[end - 1].name)
        return chain

    def fingerprints(self) -> dict:
        """The fingerprints of the last segment planned (every stage's, per shard)."""
        return getattr(self, "chain", {})

    def _chain(self, source_fp: str, stages: list[Stage], decisions: dict[int, str]) -> list[str]:
        fps, parent = [], source_fp
        for i, stage in enumerate(stages):
            parent = chain_fingerprint(parent + decisions.get(i, ""), stage)
            fps.append(parent)
        return fps

    def _starts(self, stages: list[Stage], chain: dict, retry_failed: bool) -> dict[int, int]:
        """shard -> the first stage to run: the first whose marker is missing or stale, or,
        with `retry_failed`, the first that failed samples."""
        starts = {}
        for shard, fps in chain.items():
            for i, stage in enumerate(stages):
                marker = self.marker(stage.name, shard)
                stale = not marker or marker.get("fingerprint") != fps[i]
                if stale or (retry_failed and marker.get("failed")):
                    starts[shard] = i
                    break
        return starts

    def _pass(self, plan: Plan) -> None:
        sizes = {s: (self.marker(SOURCE, s) or {}).get("samples", 0) for s in plan.starts}
        tasks = {
            stage.name: self.progress.add(
                stage.name, total=sum(n for s, n in sizes.items() if plan.starts[s] <= i)
            )
            for i, stage in enumerate(plan.stages)
        }
        # the largest shards first: a shard is one task, and small ones last fill the cores
        # while the others finish, where a large one last would run on while cores idle
        order = sorted(plan.starts, key=lambda s: (-sizes[s], s))
        items = [{"shard": s, "start": plan.starts[s]} for s in order]
        try:
            failure = self.runner.stream(
                plan, self.ctx, items, progress=lambda stage, n, failed: tasks[stage](n, failed)
            )
        except (OSError, ConfigError):
            raise  # a full disk, a refused output: said as they are
        except Exception as exc:  # a worker or node lost for good, an actor that died
            log.warning("the pass stopped", exc_info=True)  # the traceback, for -v and logs
            lost = f"the pass stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            failure = {"causes": {lost: 1}, "examples": {lost: lost}}
        unfinished = [
            (stage.name, shard)
            for shard, start in plan.starts.items()
            for i, stage in enumerate(plan.stages[start:], start)
            if (self.marker(stage.name, shard) or {}).get("fingerprint")
            != plan.fingerprints[shard][i]
        ]
        if unfinished:
            raise BuildIncomplete(_incomplete_sentence(unfinished, failure))

    def _decide(self, stage: DatasetStage, input_stage: str) -> str:
        """The driver's step between two passes: the stage's decision over every shard."""
        ready = stage.setup_decision(self.ctx)
        stage.decision_id = ready.decide(input_stage, list(range(self.shard_count)))
        return stage.decision_id

    # -- packing ----------------------------------------------------------------------------
    def pack(self, chain: dict | None = None) -> list[dict]:
        """Pack every finished shard whose rows changed since it was last packed. Pack tasks
        read their rows from the store themselves; the driver never holds a shard's records."""
        last = self.stages[-1].name
        view = self.config.pack.caption_view
        todo, packable = [], []
        for shard in range(self.shard_count):
            marker = self.marker(last, shard) or {}
            fps = chain.get(shard) if chain is not None else None
            if chain is not None and (not fps or marker.get("fingerprint") != fps[-1]):
                continue  # unfinished: a rerun finishes and packs it
            packable.append(shard)
            key = f"{marker.get('digest', '')}|{view}|{self.config.pack.version}"
            fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
            stats = read_stats(self.store, shard)
            if not stats or stats.get("fingerprint") != fingerprint:
                rows = rows_io.rows_path(last, shard)
                todo.append((self.store.url, shard, rows, view, fingerprint))
        if todo:
            task = self.progress.add("pack", total=len(todo))
            self.runner.map_shards(pack_shard, todo, progress=task)
        return [read_stats(self.store, s) for s in packable]

    @property
    def source_fingerprints(self) -> dict[int, str]:
        if not hasattr(self, "_source_fps"):
            self._source_fps = self.plan() if self.source else self.planned_fingerprints()
        return self._source_fps


def _incomplete_sentence(unfinished: list[tuple[str, int]], failure: dict) -> str:
    causes = failure.get("causes") or {}
    shards = sorted({shard for _, shard in unfinished})
    if causes:
        cause, n = max(causes.items(), key=lambda kv: kv[1])
        example = (failure.get("examples") or {}).get(cause, cause)
        why = cause if example == cause else f"{cause} in {n} samples, e.g. {example[:300]}"
    else:
        why = "workers stopped before finishing them"
    return (
        f"{len(shards)} shard(s) did not finish ({why}): nothing of theirs was kept as a "
        "result; fix the cause and rerun the same command to redo them"
    )


class NullProgress:
    def add(self, label: str, total: int) -> Callable[..., None]:
        return lambda n, failed=0: None


__all__ = ["Builder", "BuildIncomplete", "shard_name"]
