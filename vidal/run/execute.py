"""Running a stage on samples (set up once per process, a raising batch retried sample by
sample), and the local runner. Batches travel as columns {"key", "shard", "start", "record"}
where `record` is the Sample's JSON (see vidal.run.stream)."""

from __future__ import annotations

import logging
import traceback

import numpy as np

from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext, exception_reason

log = logging.getLogger(__name__)

# Set-up stages of this process, so a CPU stage run as many small tasks sets up once per worker.
_READY: dict[tuple, Stage] = {}


def ready_stage(stage: Stage, ctx: StageContext) -> Stage:
    # a dataset-level stage is set up anew for each decision it applies
    key = (stage.name, stage.config_hash(), ctx.out, getattr(stage, "decision_id", None))
    if key in _READY:
        return _READY[key]
    stage.setup(ctx)
    if getattr(stage, "load_error", None) is None:  # a model that failed to load may come back
        _READY[key] = stage
    return stage


def process_guarded(stage: Stage, samples: list[Sample]) -> list[Sample]:
    """Run the stage on the batch; if the batch raises, run the samples one by one so the
    error lands on the sample that caused it and the others still get processed."""
    try:
        out = stage.process_batch(samples)
    except Exception:
        log.warning(
            "stage %s: batch raised, retrying its %d samples one at a time\n%s",
            stage.name,
            len(samples),
            traceback.format_exc(limit=3),
        )
        out = []
        for sample in samples:
            try:
                out.extend(stage.process_batch([sample]))
            except Exception as exc:
                sample.fail(stage.name, exception_reason(exc), f"{type(exc).__name__}: {exc}")
                out.append(sample)
    if sorted(s.key for s in out) != sorted(s.key for s in samples):
        raise RuntimeError(
            f"stage {stage.name} lost or invented samples; stages must pass "
            "every sample on (filters record `dropped` instead)"
        )
    return out


def apply_stage(batch: dict, stage: Stage, ctx: StageContext) -> dict:
    """A batch function for one stage alone (the crawl's search and download waves)."""
    samples = [Sample.from_json(r) for r in batch["record"]]
    by_key = {s.key: s for s in process_guarded(ready_stage(stage, ctx), samples)}
    records = [by_key[k].to_json() for k in batch["key"]]
    return {**batch, "record": np.array(records, dtype=object)}


class LocalRunner:
    """Runs a pass in this process, shard by shard: for debugging and small tests."""

    def map_samples(self, stage: Stage, ctx: StageContext, samples: list[Sample]) -> list:
        batch = _columns(samples)
        return _samples(_in_batches(lambda b: apply_stage(b, stage, ctx), batch, stage.batch_size))

    def stream(self, plan, ctx: StageContext, items: list[dict], progress=None) -> dict:
        from vidal.run.stream import ShardTracker, StageStep, run_shard, spans

        tracker = ShardTracker([s.name for s in plan.stages])
        steps = [StageStep(plan, span, ctx, tracker) for span in spans(plan.stages)]
        seen: dict[str, list[int]] = {}  # stage -> [done, failed] already told

        def report() -> None:
            if progress:
                now = tracker.snapshot()
                report_delta(progress, seen, now)
                seen.update({stage: list(counts) for stage, counts in now.items()})

        for item in items:
            run_shard(plan, ctx, item, steps, tracker, report)
        return tracker.failure()

    def map_shards(self, fn, items: list, progress=None) -> list:
        results = []
        for item in items:
            results.append(fn(*item))
            if progress:
                progress(1)
        return results

    def shutdown(self) -> None:
        return None


def _columns(samples: list[Sample]) -> dict:
    return {
        "key": np.array([s.key for s in samples], dtype=object),
        "record": np.array([s.to_json() for s in samples], dtype=object),
    }


def _samples(batch: dict) -> list[Sample]:
    return [Sample.from_json(r) for r in batch["record"]]


def _in_batches(step, batch: dict, size: int) -> dict:
    n = len(batch["key"])
    if n == 0:
        return batch
    parts = [step({k: v[i : i + size] for k, v in batch.items()}) for i in range(0, n, size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def report_delta(progress, before: dict, after: dict) -> None:
    """Tell `progress` what `after`'s [done, failed] per stage added to `before`'s."""
    for stage, (done, failed) in after.items():
        old = before.get(stage, [0, 0])
        if done > old[0] or failed > old[1]:
            progress(stage, done - old[0], failed - old[1])
