"""The jobs the CLI runs: a whole build, or one stage (with what it needs) alone."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vidal.config import Config, ConfigError
from vidal.io.store import Store
from vidal.run.build import Builder, BuildIncomplete
from vidal.run.progress import QuietProgress, RichProgress
from vidal.run.ray_runner import make_runner
from vidal.run.summary import StageAudit, dataset_json, render_summary, totals, verdict


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
    """Per-stage counts summed over the (stage, shard) markers: O(shards) reads, no rows."""
    audit = StageAudit()
    for name in stage_names:
        for shard in range(builder.shard_count):
            audit.add_marker(name, (builder.marker(name, shard) or {}).get("audit") or {})
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

    incomplete: list[str] = []

    def work(builder: Builder) -> list[dict]:
        try:
            chain = builder.run_stages(retry_failed=retry_failed)
        except BuildIncomplete as exc:  # pack what finished; the rest is redone by a rerun
            incomplete.append(str(exc))
            chain = builder.fingerprints()
        return builder.pack(chain)

    builder, stats = _with_builder(config, source, out, quiet, runner, work)
    total = totals(stats)
    seconds = time.time() - started
    names = [s.name for s in builder.stages]
    failure = incomplete[0] if incomplete else verdict(total, _audit(builder, names))
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
    incomplete: list[str] = []

    def work(builder: Builder) -> None:
        try:
            builder.run_stages(upto, retry_failed)
        except BuildIncomplete as exc:
            incomplete.append(str(exc))

    builder, _ = _with_builder(config, source, out, quiet, runner, work)
    names = config.stages[: config.stages.index(stage) + 1]
    audit = _audit(builder, names)
    total = {
        "samples_in": audit.reached[names[0]],
        "reached": audit.reached[stage],
        "failed": audit.failed[stage],
        "errors": dict(audit.reasons.get(stage, {})),
    }
    failure = incomplete[0] if incomplete else audit.uniform_failure()
    if not quiet:
        from rich.console import Console

        Console().print(
            f"stage {stage}: {total['reached']} samples reached it, "
            f"{total['failed']} failed {total['errors'] or ''}\noutput: {builder.store.url}"
        )
    return Outcome(builder.store.url, total, time.time() - started, failure)


def with_decision(config: Config, stage: str, **params) -> Config:
    """The config with dataset-level stage `stage` (refilter, dedup) set to `params`, placed
    right after the stage it reads when the pipeline does not have it."""
    section = config.stage(stage)
    for name, value in params.items():
        setattr(section, name, value)
    problem = section.check()
    if problem:
        raise ConfigError(problem)
    if stage not in config.stages:
        if section.decision_input not in config.stages:
            raise ConfigError(
                f"the pipeline has no {section.decision_input} stage ({', '.join(config.stages)})"
            )
        config.stages.insert(config.stages.index(section.decision_input) + 1, stage)
    return config


def redecide(config: Config, out: str, stage: str, quiet: bool = False, **params) -> Outcome:
    """`vidal refilter` / `vidal dedup`: change the stage's parameters and rerun the build over
    the dataset at `out`. Stored outputs are reused for every sample whose input did not change,
    so only the clips whose decision changed are computed (or dropped) in later stages."""
    config = with_decision(config, stage, **params)
    if Store(out).read_json("work/plan.json") is None:
        raise ConfigError(f"{out} holds no vidal build (no work/plan.json)")
    outcome = build(config, None, out, quiet=quiet)
    if not quiet:
        section = config.stage(stage)
        print(f"{stage}: {_decision_line(section)}")
        if params:
            print(f"to keep this decision in later builds, pass {_overrides(stage, params)}")
    return outcome


def _overrides(stage: str, params: dict) -> str:
    return " ".join(f"{stage}.{k}={'null' if v is None else v}" for k, v in params.items())


def _decision_line(section) -> str:
    outcome = getattr(section, "outcome", None)
    if outcome is not None:  # dedup
        how = "reused" if outcome.reused else f"computed ({outcome.index} index)"
        return (
            f"{outcome.candidates} clips, {outcome.groups} groups of near-duplicates, "
            f"{outcome.duplicates} duplicates dropped; decisions {how}"
        )
    return f"rule {section.rule() or 'none (the VL filter decides)'}"
