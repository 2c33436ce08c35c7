"""The jobs the CLI runs: a whole build, or one stage (with what it needs) alone."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vidal.config import Config, ConfigError
from vidal.run.build import Builder
from vidal.run.progress import QuietProgress, RichProgress
from vidal.run.ray_runner import make_runner
from vidal.run.summary import StageAudit, dataset_json, render_summary, totals, verdict
from vidal.sample import Sample


@dataclass
class Outcome:
    out: str
    total: dict
    seconds: float
    failure: str | None  # one sentence when the job failed as a whole

    @property
    def exit_code(self) -> int:
        return 1 if self.failure else 0


def _audit(builder: Builder, stage_names: list[str]) -> StageAudit:
    audit = StageAudit()
    for shard in range(builder.shard_count):
        for record in builder.read_rows(stage_names[-1], shard).values():
            audit.add(Sample.from_json(record), stage_names)
    return audit


def _with_builder(config: Config, source, out, quiet: bool, runner, work):
    """Run `work(builder)` with a runner and progress display; the runner is always shut down."""
    runner = runner or make_runner(config.runner)
    progress = QuietProgress() if quiet or not config.runner.progress else RichProgress()
    try:
        with progress:
            builder = Builder(config, source, out, runner, progress)
            return builder, work(builder)
    finally:
        runner.shutdown()


def build(
    config: Config,
    source: str | None,
    out: str,
    retry_failed: bool = False,
    quiet: bool = False,
    runner=None,
) -> Outcome:
    """Every missing stage, then the shards, dataset.json and the summary."""
    started = time.time()

    def work(builder: Builder) -> list[dict]:
        builder.run_stages(retry_failed=retry_failed)
        return builder.pack()

    builder, stats = _with_builder(config, source, out, quiet, runner, work)
    total = totals(stats)
    seconds = time.time() - started
    names = [s.name for s in builder.stages]
    failure = verdict(total, _audit(builder, names))
    files = [f"shards/vidal-{s['shard']:05d}.tar" for s in stats]
    builder.store.write_json(
        "dataset.json",
        {
            **dataset_json(config, total, seconds, files),
            "status": "failed" if failure else "ok",
            "failure": failure,
        },
    )
    if not quiet:
        render_summary(total, seconds, builder.store.url)
    return Outcome(builder.store.url, total, seconds, failure)


def run_stage(
    config: Config,
    stage: str,
    source: str | None,
    out: str,
    retry_failed: bool = False,
    quiet: bool = False,
    runner=None,
) -> Outcome:
    """One stage over a dataset, after the stages before it in the pipeline (cached ones
    are skipped). No shards are packed."""
    if stage not in config.stages:
        raise ConfigError(f"stage {stage!r} is not in this pipeline ({', '.join(config.stages)})")
    started = time.time()
    upto = config.stages.index(stage)
    builder, _ = _with_builder(
        config, source, out, quiet, runner, lambda b: b.run_stages(upto, retry_failed)
    )
    names = config.stages[: config.stages.index(stage) + 1]
    audit = _audit(builder, names)
    total = {
        "samples_in": audit.reached[names[0]],
        "reached": audit.reached[stage],
        "failed": audit.failed[stage],
        "errors": dict(audit.reasons.get(stage, {})),
    }
    failure = audit.uniform_failure()
    if not quiet:
        from rich.console import Console

        Console().print(
            f"stage {stage}: {total['reached']} samples reached it, "
            f"{total['failed']} failed {total['errors'] or ''}\noutput: {builder.store.url}"
        )
    return Outcome(builder.store.url, total, time.time() - started, failure)
