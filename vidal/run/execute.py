"""Applying a stage to a batch of serialised samples: the one adapter every runner uses.

Batches travel as columns {"key", "shard", "record"} where `record` is the Sample's JSON; after
each stage the adapter also keeps `after_<stage>` (the record as that stage left it) so the
driver can persist every stage's rows from a single pass through the chain.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np

from vidal.sample import Sample
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)

# Set-up stages of this process, so a CPU stage run as many small tasks sets up once per worker.
_READY: dict[tuple, Stage] = {}


def ready_stage(stage: Stage, ctx: StageContext) -> Stage:
    key = (stage.name, stage.config_hash(), ctx.out)
    if key not in _READY:
        stage.setup(ctx)
        _READY[key] = stage
    return _READY[key]


def after_column(stage_name: str) -> str:
    return f"after_{stage_name}"


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
                sample.fail(stage.name, "exception", f"{type(exc).__name__}: {exc}")
                out.append(sample)
    if sorted(s.key for s in out) != sorted(s.key for s in samples):
        raise RuntimeError(
            f"stage {stage.name} lost or invented samples; stages must pass "
            "every sample on (filters record `dropped` instead)"
        )
    return out


def apply_stage(batch: dict, stage: Stage, ctx: StageContext) -> dict:
    """Ray Data / local batch function: records in, records (and the stage's snapshot) out."""
    samples = [Sample.from_json(r) for r in batch["record"]]
    done = process_guarded(ready_stage(stage, ctx), samples)
    by_key = {s.key: s for s in done}
    ordered = [by_key[k] for k in batch["key"]]
    records = np.array([s.to_json() for s in ordered], dtype=object)
    failed = np.array([stage.name in s.errors for s in ordered], dtype=bool)
    return {
        **batch,
        "record": records,
        after_column(stage.name): records,
        failed_column(stage.name): failed,
    }


def failed_column(stage_name: str) -> str:
    """Per row: did this stage fail the sample (for live failure counts)."""
    return f"failed_{stage_name}"


class LocalRunner:
    """Runs stages in this process, batch by batch: for debugging and small tests."""

    def run(self, stages: list[Stage], ctx: StageContext, rows: list[dict], progress=None):
        batch = {
            "key": np.array([r["key"] for r in rows], dtype=object),
            "shard": np.array([r["shard"] for r in rows], dtype=np.int64),
            "record": np.array([r["record"] for r in rows], dtype=object),
        }
        for stage in stages:
            parts = []
            for i in range(0, len(rows), max(1, stage.batch_size)):
                part = {k: v[i : i + stage.batch_size] for k, v in batch.items()}
                parts.append(apply_stage(part, stage, ctx))
                if progress:
                    failed = int(parts[-1][failed_column(stage.name)].sum())
                    progress(stage.name, len(part["key"]), failed)
            batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else batch
        return batch_rows(batch)

    def map_shards(self, fn, items: list, progress=None) -> list:
        results = []
        for item in items:
            results.append(fn(*item))
            if progress:
                progress(1)
        return results

    def shutdown(self) -> None:
        return None


def batch_rows(batch: dict) -> list[dict]:
    """Columns -> rows of plain Python values."""
    columns = {k: v.tolist() for k, v in batch.items()}
    return [
        dict(zip(columns, values, strict=False)) for values in zip(*columns.values(), strict=False)
    ]
