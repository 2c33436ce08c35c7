"""The Ray runner: a pass (vidal.run.stream) becomes one Ray Data execution whose operators
are named after the stages.

Read tasks load their shard's rows from the stage store; CPU stages run as tasks; model stages
(`uses_model`) run as actor pools that live for the whole pass, so a model loads once per
actor, with `num_gpus` when the cluster has GPUs. Workers write their (stage, shard) rows and
markers; only a row count per block reaches the driver. `ray.init()` starts Ray on this machine
unless `runner.ray_address` points at a cluster.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from vidal.config import RunnerConfig
from vidal.run.stream import ShardTracker, StageStep, read_shard, spans
from vidal.stages.base import StageContext

log = logging.getLogger(__name__)


def _named_step(step):
    """A task function named after its stage (Ray Data names the operator after it)."""

    def fn(batch: dict, step=step) -> dict:
        return step(batch)

    fn.__name__ = fn.__qualname__ = step.name
    return fn


class _OneStage:
    def __init__(self, stage, ctx: StageContext):
        self.stage, self.ctx = stage, ctx

    def __call__(self, batch: dict) -> dict:
        from vidal.run.execute import apply_stage

        return apply_stage(batch, self.stage, self.ctx)


class StageActor:
    """Holds one stage for the life of the actor: its model loads on the first batch that
    needs it and stays loaded for the whole pass, across every shard."""

    def __init__(self, step):
        self.step = step

    def __call__(self, batch: dict) -> dict:
        return self.step(batch)


def _shard_source(items: list[dict], out: str, plan_ref, tracker):
    """A Ray Data datasource with one read task per shard, which loads the shard's input rows
    from the stage store as one block: every step then takes whole shards (StageStep). The
    plan (every shard's fingerprints: megabytes at 10^4 shards) reaches the read tasks by
    reference, put once: in each task it cost the driver ~0.3 MB a shard (measured: 1,000
    shards, +260 MB of driver RSS)."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read(item: dict):
        batch = read_shard(item, out, _plan(plan_ref), tracker)
        return [pa.table({k: list(v) for k, v in batch.items()})]

    class ShardSource(Datasource):
        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(lambda item=item: read(item), meta) for item in items]

        def estimate_inmemory_data_size(self):
            return None

        def get_name(self) -> str:
            return "shards"

    return ShardSource()


def _read_cpus(steps: list[StageStep]) -> float:
    """What a read task asks for. With a model stage in the pass, no CPU: reading a shard's
    rows is light I/O, and on a cluster without GPUs, where the model actors hold every CPU,
    a read waiting for one would never run (a deadlock). Without one, the first step's CPUs:
    Ray Data then fuses each read into that step's task, so a shard is read by the worker that
    processes it (measured on 60 clips: two fewer Ray workers, ~5 s less CPU per build). Not
    when that step asks for custom resources or a concurrency: Ray Data fuses only operators
    with the same remote arguments and pool size, and an unfused read should cost no CPU."""
    first = steps[0].stages[0]
    if first.resources or first.concurrency:
        return 0
    if any(stage.uses_model for step in steps for stage in step.stages):
        return 0
    return first.num_cpus


_PLANS: dict = {}  # the plan of the pass this worker reads for, fetched once


def _plan(ref):
    import ray

    key = ref.hex()
    if key not in _PLANS:
        _PLANS.clear()
        _PLANS[key] = ray.get(ref)
    return _PLANS[key]


def _count(batch: dict) -> dict:
    """The end of a pass: only how many rows passed reaches the driver, never the records."""
    return {"rows": np.array([len(batch["key"])], dtype=np.int64)}


class RayRunner:
    def __init__(self, config: RunnerConfig):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            if not logging.getLogger().isEnabledFor(logging.DEBUG):  # -v keeps Ray's notes
                # Ray announces its defaults on every build ("Token authentication is
                # enabled"): errors only (Ray Data's own notes: `_ray_data`)
                logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
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
                if config.worker_niceness is not None:
                    kwargs["_system_config"] = {"worker_niceness": config.worker_niceness}
                ray.init(num_cpus=config.num_cpus, object_store_memory=store, **kwargs)
        self.has_gpus = ray.cluster_resources().get("GPU", 0) > 0

    def stream(self, plan, ctx: StageContext, items: list[dict], progress=None) -> dict:
        """One Ray Data execution for the whole pass: every shard's rows stream through every
        stage; model stages are actor pools that live (and keep their model) for the pass. (A
        pass of CPU stages only as plain Ray tasks, a shard opened and then slices of a few rows,
        was tried: 0.50x the ffmpeg limit's wall rate on 60 clips against 0.68x this way, quiet
        machine, same run conditions.)"""
        ray = self.ray
        names = [s.name for s in plan.stages]
        tracker = ray.remote(num_cpus=0)(ShardTracker).remote(names)
        steps = [
            StageStep(plan, span, ctx, tracker) for span in spans(plan.stages, plan.first_start())
        ]
        with _Poller(ray, tracker, progress):
            self._dataset(steps, items, ctx, plan, tracker)
        return ray.get(tracker.failure.remote())

    def _dataset(self, steps: list[StageStep], items: list[dict], ctx, plan, tracker) -> None:
        """The pass as one Ray Data execution: read tasks a shard each, an operator per step."""
        ray = _ray_data()
        source = _shard_source(items, ctx.out, ray.put(plan), tracker)
        read_cpus = _read_cpus(steps)
        # a read that asks for no CPU is bounded here (else every shard would be read at once);
        # one that asks for CPUs is bounded by them, and a bound would keep it from fusing
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        bound = None if read_cpus else min(cpus, len(items))
        ds = ray.data.read_datasource(
            source, override_num_blocks=len(items), num_cpus=read_cpus, concurrency=bound
        )
        for step in steps:
            ds = self._map(ds, step)
        ds = ds.map_batches(_count, batch_size=None, batch_format="numpy")
        for _ in ds.iter_batches(batch_size=None, batch_format="numpy"):
            pass
        self.last_dataset = ds  # for its execution stats (ds.stats())

    def map_samples(self, stage, ctx: StageContext, samples: list) -> list:
        """One stage over a list of samples (the crawl's waves): records in, records out."""
        from vidal.run.execute import _columns, _samples

        rows = _columns(samples)
        items = [{"key": k, "record": r} for k, r in zip(rows["key"], rows["record"], strict=True)]
        ds = _ray_data().data.from_items(items, override_num_blocks=max(1, min(len(items), 64)))
        common = dict(batch_size=stage.batch_size, batch_format="numpy", num_cpus=stage.num_cpus)
        fn = _named_step(_OneStage(stage, ctx))
        out = {"key": [], "record": []}
        for batch in ds.map_batches(fn, **common).iter_batches(batch_format="numpy"):
            out["record"].extend(batch["record"])
        return _samples(out)

    def _map(self, ds, step):
        stage = step.stages[0]  # the stages of a step share their resources (stream.spans)
        # whole blocks, a shard each: the step batches each stage itself, within a shard
        common = dict(batch_size=None, batch_format="numpy", num_cpus=stage.num_cpus)
        if stage.resources:  # custom resources: the stage runs only on nodes that offer them
            common["resources"] = dict(stage.resources)
        if not stage.uses_model:
            if stage.concurrency:
                common["compute"] = _ray_data().data.TaskPoolStrategy(size=stage.concurrency)
            return ds.map_batches(_named_step(step), **common)
        gpus = stage.num_gpus if self.has_gpus else 0
        if stage.num_gpus and not self.has_gpus:
            log.warning(
                "stage %s asks for GPUs but the cluster has none: running on CPU", stage.name
            )
        pool = type(step.name, (StageActor,), {})  # the operator shows the stage's name
        return ds.map_batches(
            pool,
            fn_constructor_kwargs={"step": step},
            compute=_ray_data().data.ActorPoolStrategy(size=stage.concurrency or 1),
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


def _ray_data():
    """Ray, with Ray Data imported and quiet (no progress bars, no execution banner): only the
    passes that use it pay for its import."""
    import ray
    import ray.data

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # -v keeps Ray Data's notes
        # its import gives "ray.data" a console handler at INFO ("Progress bars disabled",
        # "execution finished" on every pass): errors only there; its session log keeps all
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):  # its session log is no stream
                handler.setLevel(logging.ERROR)
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False
    data_ctx.print_on_execution_start = False
    return ray


class _Poller:
    """While the dataset streams, turns the tracker's totals into progress updates."""

    def __init__(self, ray, counter, progress, every: float = 0.5):
        self.ray, self.every = ray, every
        self.counter = counter if progress else None
        self.progress = progress
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
            self._poll()  # the tracker's counts are exact once the pass is over

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
    if config.kind == "auto" and not (config.ray_address or os.environ.get("RAY_ADDRESS")):
        from vidal.run.auto_runner import AutoRunner

        return AutoRunner(config)
    if config.kind == "local":
        from vidal.run.execute import LocalRunner

        return LocalRunner()
    if config.kind == "processes":
        from vidal.run.process_runner import ProcessRunner

        return ProcessRunner(config)
    return RayRunner(config)
