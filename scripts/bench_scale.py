"""The execution core at scale, with no media: how fast the machinery itself moves samples, what
the driver holds, how often models load, and how busy a model stays across shard boundaries.

    .venv/bin/python scripts/bench_scale.py                          # N = 10^4 and 10^5
    .venv/bin/python scripts/bench_scale.py --sizes 10000 100000 1000000 --plan-rows 10000000

Each size is built in a fresh process on a local Ray (the driver's figures are its own):
  - a parquet manifest of N synthetic rows (paths that need not exist: nothing reads them);
  - a chain of null CPU stages as long as the vidal10m pipeline, and one fake model stage (an
    actor pool: a fixed load time in setup, a fixed latency per batch) standing in for a GPU
    model;
  - N / 1000 shards, at least 64 (a real build has ~10^4 clips a shard; 64 boundaries at least
    for the idle share).
Printed per size, with a fake model fast enough not to be the bottleneck (`--model-batch-s`):
samples/s through the whole chain (planning and packing excluded and timed apart), the seconds
before the model's first batch (Ray's start-up, the actor, its load), the driver's CPU seconds
per sample, its peak RSS (VmHWM) and the model loads. Then one build where the fake model IS the
bottleneck (`--idle-batch-s`, N = `--idle-n`): its idle share after its first batch (wall time
between its batches over its wall time), across every shard boundary.
`--plan-rows` also plans a manifest of that many rows alone (Builder.plan: its map/reduce pass
in the workers of `--plan-runner`, max(64, N/1000) shards) and prints the time and the driver's
peak RSS. Manifests are written in row groups of 65,536 rows, as large manifests are.

Ray gets `--ray-cpus` logical CPUs (default 3 on this 2-core machine, as the demo pipeline
does): the fake model's actor holds 0.5 of them for the whole pass, and with 2 only one 1-CPU
step could run beside it, so the figure would be Ray's CPU accounting, not the machinery. A GPU
model's actor on a GPU node holds a GPU and a small share of the node's CPUs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vidal.stages.base import Stage

CHAIN = 10  # the vidal10m pipeline's stages
BEFORE = {  # measured on 3929c66 (before the streaming core), same kind of machine
    "samples_per_s": 270,
    "driver_ms_per_sample": 1.25,
    "loads": "one per model stage per wave (16 for 16 shards)",
    "plan_1e6": "1.0 GB, ~6 min",
}


@dataclass
class NullStage(Stage):
    """Passes samples on: the framework's own cost per sample and stage."""

    name: ClassVar[str] = "null"
    batch_size: int = 256

    def process(self, sample) -> None:
        return None


@dataclass
class FakeModelStage(Stage):
    """A GPU model's shape: loads once (`load_s`), then `batch_s` per batch; logs its batches."""

    name: ClassVar[str] = "fake_model"
    uses_model: ClassVar[bool] = True
    load_s: float = 1.0
    batch_s: float = 0.02  # per batch of 256 (see --model-batch-s, --idle-batch-s)
    log: str = ""
    batch_size: int = 256
    num_cpus: float = 0.5

    def setup(self, ctx) -> None:
        super().setup(ctx)
        time.sleep(self.load_s)
        with open(f"{self.log}.loads", "a") as f:
            f.write(f"{time.time()}\n")

    def process_batch(self, batch):
        started = time.time()
        time.sleep(self.batch_s)
        with open(self.log, "a") as f:
            f.write(f"{started} {time.time()}\n")
        return batch


def chain(log: str, batch_s: float = 0.15) -> list[Stage]:
    stages = []
    for i in range(CHAIN - 1):
        stage = NullStage()
        stage.name = f"null{i}"  # an instance name: each stage its own rows and markers
        stages.append(stage)
    stages.insert(4, FakeModelStage(log=log, batch_s=batch_s))
    return stages


ROW_GROUP = 65_536


def write_manifest(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, rows, 16 * ROW_GROUP):
        n = min(16 * ROW_GROUP, rows - start)
        table = pa.table(
            {
                "path": [f"clips/c{i:09d}.mp4" for i in range(start, start + n)],
                "title": [f"clip number {i}" for i in range(start, start + n)],
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_build(manifest: str, out: str, shards: int, batch_s: float, cpus: int) -> dict:
    from vidal.config import load_config
    from vidal.run.build import Builder
    from vidal.run.ray_runner import RayRunner

    overrides = [f"shards={shards}", "runner.progress=false", f"runner.num_cpus={cpus}"]
    config = load_config("demo", [*overrides, "runner.object_store_mb=300"])
    runner = RayRunner(config.runner)
    builder = Builder(config, manifest, out, runner)
    log = str(Path(out).parent / "fake_model.log")
    builder.stages = chain(log, batch_s)
    t0 = time.time()
    builder.source_fingerprints  # noqa: B018 - plans
    t1, c1 = time.time(), cpu_s()
    builder.run_stages()
    t2, c2 = time.time(), cpu_s()
    runner.shutdown()
    n = sum((builder.marker("source", s) or {}).get("samples", 0) for s in range(shards))
    return {
        "samples": n,
        "shards": shards,
        "ray_cpus": cpus,
        "plan_s": round(t1 - t0, 1),
        "stages_s": round(t2 - t1, 1),
        "samples_per_s": round(n / (t2 - t1), 1),
        "driver_ms_per_sample": round(1000 * (c2 - c1) / n, 4),
        "driver_peak_rss_mb": round(status_mb("VmHWM"), 1),
        **model_figures(log, t1),
    }


def model_figures(log: str, started: float) -> dict:
    loads = len(Path(f"{log}.loads").read_text().splitlines())
    spans = sorted(tuple(map(float, ln.split())) for ln in Path(log).read_text().splitlines())
    busy = sum(b - a for a, b in spans[1:])
    wall = spans[-1][1] - spans[1][0] if len(spans) > 2 else 0.0
    return {
        "model_loads": loads,
        "model_idle_share": round(1 - busy / wall, 3) if wall else None,
        "first_model_batch_s": round(spans[0][0] - started, 1) if spans else None,
    }


def child_plan(manifest: str, out: str, shards: int, kind: str) -> dict:
    from vidal.config import load_config
    from vidal.run.build import Builder
    from vidal.run.execute import LocalRunner
    from vidal.run.ray_runner import RayRunner

    overrides = [f"shards={shards}", "runner.progress=false", "runner.num_cpus=2"]
    config = load_config("demo", [*overrides, "runner.object_store_mb=300"])
    t0 = time.time()
    runner = RayRunner(config.runner) if kind == "ray" else LocalRunner()
    builder = Builder(config, manifest, out, runner)
    builder.plan()
    n = json.loads(Path(out, "work", "plan.json").read_text())["samples"]
    runner.shutdown()
    return {
        "samples": n,
        "plan_s": round(time.time() - t0, 1),
        "driver_peak_rss_mb": status_mb("VmHWM"),
    }


def run_child(mode: str, rows: int, root: Path, batch_s: float | str = 0.02, cpus: int = 3):
    manifest = root / f"manifest-{rows}.parquet"
    if not manifest.exists():
        write_manifest(manifest, rows)
    out = root / f"{mode}-{rows}" / "out"
    shards = max(64, rows // 1000)
    argv = [sys.executable, __file__, "--child", mode, str(manifest), str(out), str(shards)]
    argv += [str(batch_s), str(cpus)]
    done = subprocess.run(argv, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(lines[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--plan-rows", type=int, default=0, help="also plan a manifest this long")
    p.add_argument("--plan-runner", choices=["ray", "local"], default="ray")
    p.add_argument(
        "--model-batch-s",
        type=float,
        default=0.02,
        help="the fake model's seconds per batch of 256 in the throughput builds (not the "
        "bottleneck: 12,800 samples/s)",
    )
    p.add_argument("--idle-n", type=int, default=50_000, help="samples of the idle-share build")
    p.add_argument(
        "--idle-batch-s",
        type=float,
        default=0.5,
        help="the fake model's seconds per batch in the idle-share build (512 samples/s: the "
        "bottleneck, well below the chain's rate)",
    )
    p.add_argument("--ray-cpus", type=int, default=3, help="Ray's logical CPUs in the builds")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, manifest, out, shards, batch_s, cpus = args.child
        if mode == "build":
            result = child_build(manifest, out, int(shards), float(batch_s), int(cpus))
        else:
            result = child_plan(manifest, out, int(shards), batch_s)
        print(json.dumps(result), flush=True)
        return 0
    print(f"before the streaming core: {json.dumps(BEFORE)}")
    with tempfile.TemporaryDirectory(prefix="vidal-scale-") as tmp:
        cpus = args.ray_cpus
        results = {n: throughput(n, Path(tmp), args.model_batch_s, cpus) for n in args.sizes}
        if len(results) > 1:
            lo, hi = min(results), max(results)
            growth = results[hi]["driver_peak_rss_mb"] / results[lo]["driver_peak_rss_mb"]
            print(f"driver peak RSS N={hi} / N={lo}: {growth:.2f}")
        if args.idle_n:
            r = run_child("build", args.idle_n, Path(tmp), args.idle_batch_s, cpus)
            print(
                f"model as the bottleneck (N={args.idle_n}, {r['shards']} shards, "
                f"{args.idle_batch_s} s a batch): idle share after its first batch "
                f"{r['model_idle_share']}, {r['samples_per_s']:.0f} samples/s",
                flush=True,
            )
        if args.plan_rows:
            r = run_child("plan", args.plan_rows, Path(tmp), args.plan_runner)
            print(
                f"planning {r['samples']} rows ({args.plan_runner} runner, "
                f"{max(64, args.plan_rows // 1000)} shards): {r['plan_s']} s, "
                f"driver peak RSS {r['driver_peak_rss_mb']:.0f} MB"
            )
    return 0


def throughput(n: int, root: Path, batch_s: float, cpus: int) -> dict:
    r = run_child("build", n, root, batch_s, cpus)
    print(
        f"N={n:>8}  {r['shards']:>6} shards  {r['samples_per_s']:>8.1f} samples/s  "
        f"(Ray CPUs {cpus}) "
        f"(first model batch after {r['first_model_batch_s']} s)  driver "
        f"{r['driver_ms_per_sample']:.4f} ms/sample  peak RSS {r['driver_peak_rss_mb']:.0f} MB  "
        f"model loads {r['model_loads']}  (plan {r['plan_s']} s)",
        flush=True,
    )
    return r


if __name__ == "__main__":
    sys.exit(main())
