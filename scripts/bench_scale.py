"""Driver memory against dataset size: peak RSS of the `vidal build` driver at 1x and 10x the
demo's size (53 clips), each size built in a fresh process on a local Ray.

    .venv/bin/python scripts/bench_scale.py                     # 1x and 10x, media stages
    .venv/bin/python scripts/bench_scale.py --stages probe,keyframes,vl_filter,depth,audio,clip

The clips are generated once (small synthetic clips, ffmpeg lavfi) and the 10x source repeats
them under other names (hard links: distinct paths, distinct keys). Ray's own processes (raylet,
workers, object store) are not the driver; the figure is the driver's `VmHWM` from
/proc/self/status, read after the build. Records that flow through the driver are a few kB
each (payloads go to the stage store), and the driver holds at most `runner.wave_samples` of
them at a time, so the peak should not grow with the number of samples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_SIZE = 53  # the demo's clips: 5 cut from sample videos + 48 generated


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(source: str, out: str, shards: int, stages: str, extra: list[str]) -> None:
    """One build in this (fresh) process; prints one JSON line."""
    from vidal.config import load_config
    from vidal.run.jobs import build

    overrides = [
        f"shards={shards}",
        f"stages=[{stages}]",
        "runner.progress=false",
        "runner.num_cpus=2",
        "runner.object_store_mb=100",
        *extra,
    ]
    config = load_config("demo", overrides)
    before = status_kb("VmHWM")
    started = time.time()
    outcome = build(config, source, out, quiet=True)
    print(
        json.dumps(
            {
                "samples": outcome.total.get("samples_in", 0),
                "kept": outcome.total.get("kept", 0),
                "failure": outcome.failure,
                "seconds": round(time.time() - started, 1),
                "vmhwm_before_build_mb": round(before / 1024, 1),
                "vmhwm_mb": round(status_kb("VmHWM") / 1024, 1),
                "vmrss_mb": round(status_kb("VmRSS") / 1024, 1),
            }
        ),
        flush=True,
    )


def make_sources(root: Path, base: int, factors: list[int]) -> dict[int, Path]:
    from vidal.media.synth import make_clip_set

    bank = root / "bank"
    make_clip_set(bank, base, seed=7, duration=(1.0, 2.0), size=(96, 64))
    files = sorted(p for p in bank.iterdir() if p.is_file())
    sources = {}
    for factor in factors:
        folder = root / f"x{factor}"
        for copy in range(factor):
            sub = folder / f"copy{copy:03d}"
            sub.mkdir(parents=True)
            for f in files:
                try:
                    os.link(f, sub / f.name)
                except OSError:
                    shutil.copy2(f, sub / f.name)
        sources[factor] = folder
    return sources


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--factors", type=int, nargs="+", default=[1, 10])
    p.add_argument("--base", type=int, default=DEMO_SIZE, help="clips at 1x (the demo's)")
    p.add_argument("--stages", default="probe,keyframes,audio,clip")
    p.add_argument("--shards-per-x", type=int, default=4, help="shards at 1x (the demo's)")
    p.add_argument("--keep", help="keep the sources and outputs in this folder")
    p.add_argument("--child", nargs=3, metavar=("SOURCE", "OUT", "SHARDS"), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides for every build")
    args = p.parse_args()
    if args.child:
        source, out, shards = args.child
        child(source, out, int(shards), args.stages, args.overrides)
        return 0

    root = Path(args.keep or tempfile.mkdtemp(prefix="vidal-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        print(f"generating {args.base} clips ...", flush=True)
        sources = make_sources(root, args.base, args.factors)
        for factor in args.factors:
            argv = [sys.executable, __file__, "--stages", args.stages, "--child"]
            argv += [str(sources[factor]), str(root / f"out-x{factor}")]
            argv += [str(args.shards_per_x * factor), *args.overrides]
            done = subprocess.run(argv, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if done.returncode != 0 or not lines:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            results[factor] = json.loads(lines[-1])
            r = results[factor]
            print(
                f"{factor:>3}x  {r['samples']:>6} samples  kept {r['kept']:>6}  "
                f"{r['seconds']:>7.1f} s  peak driver RSS {r['vmhwm_mb']:>7.1f} MB "
                f"(before the build {r['vmhwm_before_build_mb']:.1f} MB)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lo, hi = min(results), max(results)
    if lo != hi:
        growth = results[hi]["vmhwm_mb"] / results[lo]["vmhwm_mb"]
        print(
            f"peak driver RSS {hi}x / {lo}x = {growth:.2f} "
            f"({results[hi]['samples']} vs {results[lo]['samples']} samples)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
