"""The processes runner (`runner.kind=processes`): a pass on one machine without Ray, the way
img2dataset's and video2dataset's multiprocessing distributors work. Each shard is one task in a
pool of worker processes (spawned, never forked from a process that holds threads): read, every
step, rows and markers written by the worker, as on Ray (`vidal.run.stream`). No daemons, no
object store, no scheduler: on a CPU-bound build of media stages it is the cheapest way to keep
every core on ffmpeg. Each worker sets a stage up once (`ready_stage`), so a model stage loads
once per worker process: on a machine with GPUs, Ray's actor pools (one model per GPU) fit.

Progress travels through a manager queue, whose puts are answered: when a task's result
arrives, every count it sent has arrived too, so the totals are exact. A worker dies with the
build process (PR_SET_PDEATHSIG): a killed build leaves no worker writing into an output whose
lock is gone. A lost worker (killed, out of memory) breaks the pool: the pass stops, its
unfinished shards stay unfinished, and a rerun redoes them.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager

from vidal.config import RunnerConfig
from vidal.run.execute import _columns, _samples, apply_stage, report_delta
from vidal.run.stream import Plan, ShardTracker, StageStep, run_shard, spans
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_EVENTS = None  # this worker's end of the progress queue (set by `_start_worker`)


def _die_with(parent: int) -> None:
    """A helper process's start: it goes when the build process goes, however that dies, and
    leaves Ctrl-C to the build (which stops the pass and ends its helpers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the build died before the line above took effect
        os._exit(1)


def _start_worker(parent: int, events) -> None:
    global _EVENTS
    _EVENTS = events
    _die_with(parent)


class _RelayingTracker(ShardTracker):
    """A worker's tracker for one shard: each batch's counts go to the parent as they pass."""

    def report_all(self, reports: list[tuple]) -> list[tuple[int, int, int]]:
        before = {k: list(v) for k, v in self.counts.items()}
        finished = super().report_all(reports)
        deltas: list[tuple] = []
        report_delta(lambda *delta: deltas.append(delta), before, self.counts)
        if deltas and _EVENTS is not None:
            _EVENTS.put(deltas)
        return finished


def _stream_shard(plan: Plan, ctx: StageContext, item: dict) -> dict:
    """A task: one shard through the whole pass. Returns its tracker's failures."""
    tracker = _RelayingTracker([s.name for s in plan.stages])
    steps = [StageStep(plan, span, ctx, tracker) for span in spans(plan.stages)]
    run_shard(plan, ctx, item, steps, tracker)
    return tracker.failure()


def _for_shard(plan: Plan, shard: int) -> Plan:
    """The plan as one shard's task needs it (the pass's plan holds every shard's
    fingerprints: O(shards) to send with each of O(shards) tasks)."""
    return dataclasses.replace(
        plan, starts={shard: plan.starts[shard]}, fingerprints={shard: plan.fingerprints[shard]}
    )


def _merge(total: dict, failure: dict) -> None:
    for shard, index in failure["poisoned"].items():
        total["poisoned"][shard] = min(index, total["poisoned"].get(shard, index))
    total["causes"].update(failure["causes"])
    for cause, example in failure["examples"].items():
        total["examples"].setdefault(cause, example)


class _Relay:
    """While a pass runs, hands the workers' counts to `progress` from a thread; on exit,
    the rest of the queue (every finished task's counts are in it by then)."""

    def __init__(self, events, progress):
        self.events, self.progress = events, progress
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._drain(block=False)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._drain(block=True)

    def _drain(self, block: bool) -> None:
        try:
            while True:
                deltas = self.events.get(timeout=0.2) if block else self.events.get_nowait()
                for stage, done, failed in deltas:
                    if self.progress:
                        self.progress(stage, done, failed)
                if block:
                    return
        except (queue.Empty, EOFError, OSError):
            return


class ProcessRunner:
    def __init__(self, config: RunnerConfig):
        self.workers = max(1, config.num_cpus or os.cpu_count() or 1)
        self.ray = None  # in-process work (the crawl's download threads) stays in this process
        self._pool = self._manager = self._events = None
        self._warned_models = False

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            if self._manager is None:
                self._manager = SyncManager(ctx=spawn)
                self._manager.start(_die_with, (os.getpid(),))
                self._events = self._manager.Queue()
            self._pool = ProcessPoolExecutor(
                self.workers, spawn, initializer=_start_worker, initargs=(os.getpid(), self._events)
            )
        return self._pool

    def stream(self, plan: Plan, ctx: StageContext, items: list[dict], progress=None) -> dict:
        self._warn_models(plan.stages)
        total = {"poisoned": {}, "causes": collections.Counter(), "examples": {}}
        pool = self._executor()
        with _Relay(self._events, progress):
            tasks = [
                pool.submit(_stream_shard, _for_shard(plan, item["shard"]), ctx, item)
                for item in items
            ]
            for failure in self._results(tasks):
                _merge(total, failure)
        return {**total, "causes": dict(total["causes"])}

    def map_shards(self, fn, items: list, progress=None) -> list:
        pool = self._executor()
        results = []
        for result in self._results([pool.submit(fn, *item) for item in items]):
            results.append(result)
            if progress:
                progress(1)
        return results

    def map_samples(self, stage: Stage, ctx: StageContext, samples: list) -> list:
        """One stage over samples (the crawl's waves), in slices across the workers."""
        rows, pool = _columns(samples), self._executor()
        size = max(1, stage.batch_size, -(-len(samples) // (4 * self.workers)))
        starts = range(0, len(samples), size)
        slices = [{k: v[i : i + size] for k, v in rows.items()} for i in starts]
        tasks = [pool.submit(apply_stage, piece, stage, ctx) for piece in slices]
        list(self._results(tasks))  # raises the first failure, after cancelling the rest
        return [s for task in tasks for s in _samples(task.result())]

    def _results(self, tasks: list):
        """The tasks' results as they finish. A failure cancels the tasks not started yet (the
        running ones finish: their writes are whole) and raises; a lost worker also retires
        the pool, so the next pass starts a fresh one."""
        pending = set(tasks)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (task.result() for task in done)
        except BrokenProcessPool:
            self._pool = None
            raise
        except KeyboardInterrupt:  # stop now: a running shard's writes are whole or absent
            self._stop_now()
            raise
        finally:
            for task in pending:
                task.cancel()

    def _warn_models(self, stages: list[Stage]) -> None:
        models = [s.name for s in stages if s.uses_model]
        if models and self.workers > 1 and not self._warned_models:
            self._warned_models = True
            log.warning(
                "runner.kind=processes: %s load once in each of %d worker processes (set "
                "runner.num_cpus to run fewer, or use Ray for one model per GPU)",
                ", ".join(models),
                self.workers,
            )

    def _stop_now(self) -> None:
        for child in multiprocessing.active_children():  # the workers and the manager
            child.kill()
        self._pool = self._manager = None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
