"""The processes runner (`runner.kind=processes`): a pass on one machine without Ray, the way
img2dataset's and video2dataset's multiprocessing distributors work. Each shard is one task in a
pool of worker processes (spawned, never forked from a process that holds threads): read, every
step, rows and markers written by the worker, as on Ray (`vidal.run.stream`). No daemons, no
object store, no scheduler: on a CPU-bound build of media stages it is the cheapest way to keep
every core on ffmpeg. Each worker sets a stage up once (`ready_stage`); a pass with model stages
runs in a pool as large as their smallest `concurrency` (default 1, as Ray's actor pools), so
that many copies of each model load, and the pool goes when the pass ends.

Progress travels as datagrams on a Unix socket the build binds (`_Counts`): on Linux a send
returns once its message is queued at the build, so when a task's result arrives every count
it sent has arrived too, and the totals are exact; each message is whole, with no lock shared
between workers (a worker killed mid-send cannot block or garble the others'). The build reads
the socket in a thread that does nothing else, so a send waits only while a handful of messages
queue; a worker whose send still waits `SEND_TIMEOUT_S` stops sending (its counts are then
missing from the live totals, never from the rows and markers). A worker dies with the
build process (PR_SET_PDEATHSIG): a killed build leaves no worker writing into an output whose
lock is gone. A lost worker (killed, out of memory) breaks the pool: its unfinished tasks run
again in a fresh one (shards are idempotent), up to `ATTEMPTS` times in all, as Ray retries.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import tempfile
import threading
import traceback
import weakref
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from vidal.config import RunnerConfig
from vidal.run.execute import LocalRunner, report_delta
from vidal.run.stream import Plan, ShardTracker, StageStep, run_shard, spans
from vidal.stages.base import Stage, StageContext

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
ATTEMPTS = 3  # runs of a task whose worker was lost, as Ray's max_retries=2
SEND_TIMEOUT_S = 5  # a build that stopped reading counts must not hang its workers
_COUNTS_SOCKET = None  # this worker's socket to the build's `_Counts` (set by `_start_worker`)


def _die_with(parent: int) -> None:
    """A helper process's start: it goes when the build process goes, however that dies, and
    leaves Ctrl-C to the build (which stops the pass and ends its helpers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the build died before the line above took effect
        os._exit(1)


def _start_worker(parent: int, address: str) -> None:
    global _COUNTS_SOCKET
    _die_with(parent)
    _COUNTS_SOCKET = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    _COUNTS_SOCKET.settimeout(SEND_TIMEOUT_S)
    _COUNTS_SOCKET.connect(address)


def _ready() -> None:
    """A task that does nothing: submitted once per worker so that a new pool starts every
    worker at once (a pool otherwise starts one per task it is given, as they come)."""


class _RelayingTracker(ShardTracker):
    """A worker's tracker for one shard: each batch's counts go to the parent as they pass."""

    def report_all(self, reports: list[tuple]) -> list[tuple[int, int, int]]:
        before = {k: list(v) for k, v in self.counts.items()}
        finished = super().report_all(reports)
        deltas: list[tuple] = []
        report_delta(lambda *delta: deltas.append(delta), before, self.counts)
        if deltas:
            _send(deltas)
        return finished


def _send(deltas: list) -> None:
    """Counts to the build; progress must never break or stall a build."""
    global _COUNTS_SOCKET
    if _COUNTS_SOCKET is None:
        return
    try:
        _COUNTS_SOCKET.send(json.dumps(deltas).encode())
    except TimeoutError:
        log.warning("the build is not reading progress counts: this worker stops sending them")
        _COUNTS_SOCKET = None
    except OSError:  # the build is gone, or ended the pass
        pass


def _stream_shard(plan: Plan, ctx: StageContext, item: dict) -> dict:
    """A task: one shard through the whole pass. Returns its tracker's failures."""
    tracker = _RelayingTracker([s.name for s in plan.stages])
    steps = [StageStep(plan, span, ctx, tracker) for span in spans(plan.stages)]
    run_shard(plan, ctx, item, steps, tracker)
    return tracker.failure()


def _portable(fn, *args):
    """`fn(*args)` in a worker, its exception made safe to send back: one the parent could not
    rebuild (a constructor with other arguments than its message) would break the whole pool
    and hide the cause. OSError stays an OSError (a full disk is said as it is)."""
    try:
        return fn(*args)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            kind = OSError if isinstance(exc, OSError) else RuntimeError
            detail = "".join(traceback.format_exception(exc, limit=-3))
            raise kind(f"{type(exc).__name__}: {exc}\n{detail}") from None
        raise


def _for_shard(plan: Plan, shard: int) -> Plan:
    """The plan as one shard's task needs it (the pass's plan holds every shard's
    fingerprints: O(shards) to send with each of O(shards) tasks)."""
    return dataclasses.replace(
        plan, starts={shard: plan.starts[shard]}, fingerprints={shard: plan.fingerprints[shard]}
    )


def usable_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container's `--cpus`, a pod's limit), as Ray counts them; `os.cpu_count()` is the host's."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota(cgroup: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):  # cgroup v2
        limit, period = (cgroup / "cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(period)
    with contextlib.suppress(OSError, ValueError):  # cgroup v1
        limit = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return limit / period if limit > 0 else None
    return None


class _Counts:
    """The build's end of the workers' progress counts: a Unix datagram socket in a private
    folder (an abstract address would be reachable by any local user), under /tmp when
    $TMPDIR is too long for a socket's address."""

    PREFIX = "vidal-counts-"

    def __init__(self):
        where = tempfile.gettempdir()
        # a socket's address holds ~100 bytes: the folder's name and "/socket" take ~40
        where = where if len(where) <= 60 or not os.path.isdir("/tmp") else "/tmp"
        _sweep_dead(Path(where), self.PREFIX)
        self.folder = tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=where)
        self.address = os.path.join(self.folder, "socket")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self._remove = weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)

    def receive(self, timeout: float) -> list | None:
        """One message's deltas, waiting up to `timeout` seconds (0: not at all); None when
        none came, [] for a message that is not counts."""
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            return None
        try:
            return [(str(name), int(done), int(bad)) for name, done, bad in json.loads(message)]
        except (ValueError, TypeError):
            return []

    def close(self) -> None:
        self.sock.close()
        self._remove()


def _sweep_dead(where: Path, prefix: str) -> None:
    """Remove the counts folders of builds that are gone (killed: nothing removed theirs),
    named PREFIX<pid>-...; a live pid's, or another user's, stay."""
    for folder in where.glob(f"{prefix}*-*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # alive, as another user
            pass


class _Relay:
    """While a pass runs, one thread takes the workers' counts off the socket into a tally and
    does nothing else (so a worker's send never waits on the display), and another hands the
    tally to `progress` every 0.2 s; on exit, the rest of what was sent (every finished
    task's counts are queued by then)."""

    def __init__(self, counts: _Counts, progress):
        self.counts, self.progress = counts, progress
        self.tally: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=loop, daemon=True) for loop in (self._take, self._hand_on)
        ]

    def __enter__(self):
        while self.counts.receive(0) is not None:  # late counts of a broken pass: not ours
            pass
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        while self._add(self.counts.receive(0)):
            pass
        self._hand_on_tally()

    def _take(self) -> None:
        while not self.stop.is_set():
            self._add(self.counts.receive(0.2))

    def _add(self, deltas: list | None) -> bool:
        with self.lock:
            for stage, done, failed in deltas or ():
                total = self.tally.setdefault(stage, [0, 0])
                total[0], total[1] = total[0] + done, total[1] + failed
        return deltas is not None

    def _hand_on(self) -> None:
        while not self.stop.wait(0.2):
            self._hand_on_tally()

    def _hand_on_tally(self) -> None:
        with self.lock:
            tally, self.tally = self.tally, {}
        for stage, (done, failed) in tally.items():
            if self.progress and (done or failed):
                self.progress(stage, done, failed)


class ProcessRunner:
    def __init__(self, config: RunnerConfig):
        self.workers = max(1, config.num_cpus or usable_cpus())
        self.ray = None  # in-process work (the crawl's download threads) stays in this process
        self._pools: dict[int, ProcessPoolExecutor] = {}  # workers -> pool
        self._counts = _Counts()

    def _executor(self, size: int) -> ProcessPoolExecutor:
        if size not in self._pools:
            pool = ProcessPoolExecutor(
                size,
                multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), self._counts.address),
            )
            for _ in range(size):
                pool.submit(_ready)
            self._pools[size] = pool
        return self._pools[size]

    def stream(self, plan: Plan, ctx: StageContext, items: list[dict], progress=None) -> dict:
        size = self._pass_workers(plan.stages_to_run())
        total = ShardTracker([s.name for s in plan.stages])  # the workers' failures, merged
        calls = [(_for_shard(plan, item["shard"]), ctx, item) for item in items]
        try:
            with _Relay(self._counts, progress):
                for failure in self._run(size, _stream_shard, calls):
                    total.absorb(failure)
        finally:
            if size != self.workers:  # a model pass's pool holds its models: free them
                self._retire(size)
        return total.failure()

    def map_shards(self, fn, items: list, progress=None) -> list:
        results = []
        for result in self._run(self.workers, fn, items):
            results.append(result)
            if progress:
                progress(1)
        return results

    def map_samples(self, stage: Stage, ctx: StageContext, samples: list) -> list:
        """One stage over samples (the crawl's search waves), in this process as the local
        runner does: the wave shares one rate limiter and the stage's own threads."""
        return LocalRunner().map_samples(stage, ctx, samples)

    def _pass_workers(self, stages: list[Stage]) -> int:
        """Every worker, or, with model stages, as many as the smallest model `concurrency`
        (default 1): each worker loads each model of the pass."""
        models = [s for s in stages if s.uses_model]
        if not models:
            return self.workers
        size = max(1, min(self.workers, *(s.concurrency or 1 for s in models)))
        if size < self.workers:
            log.info(
                "runner.kind=processes: %d worker(s) for this pass, each loading %s "
                "(the smallest model concurrency)",
                size,
                ", ".join(s.name for s in models),
            )
        return size

    def _run(self, size: int, fn, calls: list):
        """`fn(*args)` for each of `calls` in the pool of `size` workers; results as they
        finish. A lost worker breaks the pool: the calls that had not succeeded run again in a
        fresh pool, `ATTEMPTS` times in all."""
        todo = list(calls)
        for attempt in range(1, ATTEMPTS + 1):
            futures: list = []
            try:
                pool = self._executor(size)
                futures = [pool.submit(_portable, fn, *args) for args in todo]
                yield from self._finished(futures)
                return
            except BrokenProcessPool:  # in a task, or found by submit (a worker lost idle)
                self._pools.pop(size, None)
                todo = [args for i, args in enumerate(todo) if not _succeeded(futures, i)]
                if attempt == ATTEMPTS:
                    raise
                log.warning(
                    "a worker process was lost (killed, or out of memory): %d unfinished "
                    "task(s) run again in a fresh pool (attempt %d of %d)",
                    len(todo),
                    attempt + 1,
                    ATTEMPTS,
                )

    def _finished(self, futures: list):
        """The futures' results as they finish, successes first. On a task's failure the
        tasks not started are cancelled and the running ones waited for (their writes whole,
        their counts in) before it is raised; Ctrl-C stops every worker at once."""
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: f.exception() is not None):
                    yield future.result()
        except KeyboardInterrupt:
            self._stop_now()
            raise
        except BrokenProcessPool:
            raise  # every worker of that pool is gone: nothing to wait for
        except BaseException:
            for future in pending:
                future.cancel()
            wait(pending)
            raise

    def _retire(self, size: int) -> None:
        pool = self._pools.pop(size, None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _stop_now(self) -> None:
        for child in multiprocessing.active_children():  # the workers
            child.kill()
        self._pools = {}

    def release(self) -> None:
        """Let every worker go, their memory with them; a later pass starts a pool again."""
        for size in list(self._pools):
            self._retire(size)

    def shutdown(self) -> None:
        self.release()
        self._counts.close()


def _succeeded(futures: list, index: int) -> bool:
    """Whether the task at `index` ran to its result (False when it was never submitted)."""
    if index >= len(futures):
        return False
    future = futures[index]
    return future.done() and not future.cancelled() and future.exception() is None
