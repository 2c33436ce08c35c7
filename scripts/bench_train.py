"""Training throughput on CPU: samples/s and the data-wait share (the fraction of step time
spent waiting for the loader) of the video trainer with a small encoder, over generated
shards, with 0, 1 and 2 DataLoader workers. The goal: with workers, the loader never starves
the model (a data-wait share near 0).

    python scripts/bench_train.py                 # make bench
    python scripts/bench_train.py --workers 0 2 --steps 40 --json out.json

Prints a table and one JSON line (also written to --json when given). The first logged window
(worker start-up, first shuffle-buffer fill) is left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_shards(root: Path, clips: int, size: tuple[int, int]) -> str:
    from vidal.config import load_config
    from vidal.media.synth import make_clip_set
    from vidal.run.jobs import build

    make_clip_set(root / "source", clips, seed=0, duration=(2.0, 3.0), size=size, audio_every=10**6)
    overrides = ["runner.kind=local", "runner.progress=false", "stages=[probe,clip]", "shards=4"]
    outcome = build(
        load_config("demo", overrides), str(root / "source"), str(root / "out"), quiet=True
    )
    if outcome.exit_code:
        sys.exit(f"building the bench shards failed: {outcome.failure}")
    return str(root / "out" / "shards" / "vidal-*.tar")


def config(shards: str, out: Path, workers: int, args):
    from vidal.train.config import DataConfig, EncoderConfig, TrainConfig

    return TrainConfig(
        shards=shards,
        out=str(out),
        steps=args.steps,
        lr=1e-3,
        warmup_steps=2,
        log_every=max(1, args.steps // 5),
        checkpoint_every=10**9,  # the last step only
        data=DataConfig(
            image_size=args.image_size,
            batch_size=args.batch_size,
            workers=workers,
            shuffle_buffer=100,
        ),
        encoder=EncoderConfig(
            hidden_size=args.hidden,
            layers=args.layers,
            heads=4,
            patch_size=8,
            image_size=args.image_size,
            lora_rank=0,  # a random tower: full fine-tuning (LoRA adapts a pretrained one)
        ),
    )


def measure(shards: str, root: Path, workers: int, args) -> dict:
    import torch

    from vidal.train.loop import train

    # loader workers and torch's compute threads share the cores: oversubscribed, torch's
    # threads spin and every step slows down
    threads = args.threads or max(1, (os.cpu_count() or 1) - workers)
    torch.set_num_threads(threads)
    out = root / f"train-w{workers}"
    started = time.perf_counter()
    train(config(shards, out, workers, args))
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in (out / "log.jsonl").open()][1:]
    rate = sum(line["samples_per_s"] for line in lines) / len(lines)
    wait = sum(line["data_wait_share"] for line in lines) / len(lines)
    return {
        "workers": workers,
        "torch_threads": threads,
        "samples_per_s": round(rate, 1),
        "data_wait_share": round(wait, 3),
        "wall_s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads (default: cores - workers)")
    parser.add_argument("--json", help="also write the JSON result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidal-bench-train-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        shards = make_shards(root, args.clips, (160, 120))
        build_s = time.perf_counter() - started
        rows = [measure(shards, root, w, args) for w in args.workers]
    result = {
        "bench": "train_video_cpu",
        "clips": args.clips,
        "frames": 8,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "encoder": f"ViT {args.layers} x {args.hidden}, patch 8",
        "cpus": os.cpu_count(),
        "build_s": round(build_s, 1),
        "runs": rows,
    }
    print(
        f"video training on CPU: {result['encoder']}, {args.image_size} px, 8 frames, "
        f"batch {args.batch_size}, {args.steps} steps, {result['cpus']} cores"
    )
    print(f"{'workers':>8} {'threads':>8} {'samples/s':>10} {'data wait':>10} {'wall s':>8}")
    for row in rows:
        print(
            f"{row['workers']:>8} {row['torch_threads']:>8} {row['samples_per_s']:>10.1f} "
            f"{row['data_wait_share']:>10.1%} {row['wall_s']:>8.1f}"
        )
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
