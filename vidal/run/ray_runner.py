"""The Ray runner: stages become Ray Data operators named after them.

CPU stages run as tasks; model stages (`uses_model`) run as actor pools so their models load
once per actor, with `num_gpus` when the cluster has GPUs. `ray.init()` starts Ray on this
machine unless `runner.ray_address` points at a cluster.
"""

from __future__ import annotations

import logging
import os
import threading

from vidal.config import RunnerConfig
from vidal.run.execute import apply_stage, batch_rows, failed_column, ready_stage
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)


class ProgressCounter:
    """A Ray actor the workers report to, so the driver can show per-stage progress and
    failures of the whole cluster while the dataset streams."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, stage: str, done: int, failed: int) -> None:
        total = self.counts.setdefault(stage, [0, 0])
        total[0] += done
        total[1] += failed

    def snapshot(self) -> dict[str, list[int]]:
        return self.counts


def _report(counter, stage: Stage, out: dict) -> dict:
    if counter is not None:
        counter.add.remote(stage.name, len(out["key"]), int(out[failed_column(stage.name)].sum()))
    return out


class StageActor:
    """Holds one set-up stage (its models) for the life of the actor."""

    def __init__(self, stage: Stage, ctx: StageContext, counter=None):
        self.stage, self.ctx, self.counter = stage, ctx, counter
        ready_stage(stage, ctx)

    def __call__(self, batch: dict) -> dict:
        return _report(self.counter, self.stage, apply_stage(batch, self.stage, self.ctx))


def _named(stage: Stage):
    def fn(batch: dict, stage=stage, ctx=None, counter=None) -> dict:
        return _report(counter, stage, apply_stage(batch, stage, ctx))

    fn.__name__ = fn.__qualname__ = stage.name
    return fn


class RayRunner:
    def __init__(self, config: RunnerConfig):
        import ray
        import ray.data

        self.ray = ray
        if not ray.is_initialized():
            if not logging.getLogger().isEnabledFor(logging.DEBUG):  # -v keeps Ray's notes
                # Ray announces its defaults on every build ("Token authentication is
                # enabled", "Progress bars disabled", "execution finished"): errors only
                for name in ("ray._private.authentication", "ray.data"):
                    logging.getLogger(name).setLevel(logging.ERROR)
            kwargs = dict(
                ignore_reinit_error=True,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
            if config.ray_address:
                ray.init(address=config.ray_address, **kwargs)
            else:
                store = config.object_store_mb * 1024**2 if config.object_store_mb else None
                ray.init(num_cpus=config.num_cpus, object_store_memory=store, **kwargs)
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = False
        data_ctx.print_on_execution_start = False
        self.has_gpus = ray.cluster_resources().get("GPU", 0) > 0

    def run(self, stages: list[Stage], ctx: StageContext, rows: list[dict], progress=None):
        ds = self.ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
        counter = self.ray.remote(num_cpus=0)(ProgressCounter).remote() if progress else None
        for stage in stages:
            ds = self._map(ds, stage, ctx, counter)
        out = []
        with _Poller(self.ray, counter, progress) as poller:
            for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
                out.extend(batch_rows(batch))
            # the workers' reports may still be in flight: settle on what the rows say
            poller.settle(
                {s.name: (len(out), sum(r[failed_column(s.name)] for r in out)) for s in stages}
            )
        return out

    def _map(self, ds, stage: Stage, ctx: StageContext, counter=None):
        common = dict(batch_size=stage.batch_size, batch_format="numpy", num_cpus=stage.num_cpus)
        if stage.resources:  # custom resources: the stage runs only on nodes that offer them
            common["resources"] = dict(stage.resources)
        if not stage.uses_model:
            fn_kwargs = {"ctx": ctx, "counter": counter}
            return ds.map_batches(_named(stage), fn_kwargs=fn_kwargs, **common)
        gpus = stage.num_gpus if self.has_gpus else 0
        if stage.num_gpus and not self.has_gpus:
            log.warning(
                "stage %s asks for GPUs but the cluster has none: running on CPU", stage.name
            )
        pool = type(stage.name, (StageActor,), {})  # the operator shows the stage's name
        return ds.map_batches(
            pool,
            fn_constructor_kwargs={"stage": stage, "ctx": ctx, "counter": counter},
            concurrency=stage.concurrency or 1,
            num_gpus=gpus,
            **common,
        )

    def map_shards(self, fn, items: list, progress=None) -> list:
        remote = self.ray.remote(num_cpus=1, max_retries=2)(fn)
        pending = [remote.remote(*item) for item in items]
        results = []
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            results.extend(self.ray.get(done))
            if progress:
                progress(len(done))
        return results

    def shutdown(self) -> None:
        if os.environ.get("VIDAL_KEEP_RAY") != "1":
            self.ray.shutdown()


class _Poller:
    """While the dataset streams, turns the counter's totals into progress updates."""

    def __init__(self, ray, counter, progress, every: float = 0.5):
        self.ray, self.counter, self.progress, self.every = ray, counter, progress, every
        self.seen: dict[str, list[int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if self.counter is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.counter is not None:
            self.stop.set()
            self.thread.join()

    def settle(self, exact: dict[str, tuple[int, int]]) -> None:
        """Bring every stage's display to the exact final counts."""
        if self.counter is None:
            return
        self.stop.set()
        self.thread.join()
        for stage, (done, failed) in exact.items():
            before = self.seen.get(stage, [0, 0])
            self.progress(stage, max(0, done - before[0]), max(0, failed - before[1]))
            self.seen[stage] = [done, failed]

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        try:
            counts = self.ray.get(self.counter.snapshot.remote(), timeout=10)
        except Exception:  # progress must never break a build
            return
        for stage, (done, failed) in counts.items():
            before = self.seen.get(stage, [0, 0])
            if done > before[0] or failed > before[1]:
                self.progress(stage, done - before[0], failed - before[1])
                self.seen[stage] = [done, failed]


def make_runner(config: RunnerConfig):
    if config.kind == "local":
        from vidal.run.execute import LocalRunner

        return LocalRunner()
    return RayRunner(config)
