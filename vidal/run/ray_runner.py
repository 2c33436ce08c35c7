"""The Ray runner: stages become Ray Data operators named after them.

CPU stages run as tasks; model stages (`uses_model`) run as actor pools so their models load
once per actor, with `num_gpus` when the cluster has GPUs. `ray.init()` starts Ray on this
machine unless `runner.ray_address` points at a cluster.
"""

from __future__ import annotations

import logging
import os

from vidal.config import RunnerConfig
from vidal.run.execute import apply_stage, batch_rows, ready_stage
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)


class StageActor:
    """Holds one set-up stage (its models) for the life of the actor."""

    def __init__(self, stage: Stage, ctx: StageContext):
        self.stage, self.ctx = stage, ctx
        ready_stage(stage, ctx)

    def __call__(self, batch: dict) -> dict:
        return apply_stage(batch, self.stage, self.ctx)


def _named(stage: Stage):
    def fn(batch: dict, stage=stage, ctx=None) -> dict:
        return apply_stage(batch, stage, ctx)

    fn.__name__ = fn.__qualname__ = stage.name
    return fn


class RayRunner:
    def __init__(self, config: RunnerConfig):
        import ray
        import ray.data

        self.ray = ray
        if not ray.is_initialized():
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
        for stage in stages:
            ds = self._map(ds, stage, ctx)
        out = []
        for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
            out.extend(batch_rows(batch))
            if progress:
                progress(None, len(batch["key"]))
        return out

    def _map(self, ds, stage: Stage, ctx: StageContext):
        common = dict(batch_size=stage.batch_size, batch_format="numpy", num_cpus=stage.num_cpus)
        if stage.resources:  # custom resources: the stage runs only on nodes that offer them
            common["resources"] = dict(stage.resources)
        if not stage.uses_model:
            return ds.map_batches(_named(stage), fn_kwargs={"ctx": ctx}, **common)
        gpus = stage.num_gpus if self.has_gpus else 0
        if stage.num_gpus and not self.has_gpus:
            log.warning(
                "stage %s asks for GPUs but the cluster has none: running on CPU", stage.name
            )
        pool = type(stage.name, (StageActor,), {})  # the operator shows the stage's name
        return ds.map_batches(
            pool,
            fn_constructor_kwargs={"stage": stage, "ctx": ctx},
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


def make_runner(config: RunnerConfig):
    if config.kind == "local":
        from vidal.run.execute import LocalRunner

        return LocalRunner()
    return RayRunner(config)
