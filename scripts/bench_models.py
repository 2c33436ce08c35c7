"""Model stages on CPU with tiny models: frames/s per stage, and the share of stage time spent
outside the model forward (preprocessing, keyframe I/O, PNG encoding): the part we can remove.

    .venv/bin/python scripts/bench_models.py [--clips 24] [--out bench-out/models]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vidal.config import load_config
from vidal.media.synth import make_clip_set
from vidal.run.build import Builder
from vidal.run.jobs import build
from vidal.sample import Sample
from vidal.stages.base import StageContext

STAGES = [("vl_filter", "tiny:clip"), ("depth", "tiny:glpn"), ("depth", "tiny:dpt")]


class ForwardTimer:
    """Seconds spent inside the model, via hooks on its direct children (CLIP's embedders call
    `get_image_features`, which bypasses the top module's forward; children run one at a
    time, so their times add up without overlap)."""

    def __init__(self, module):
        self.seconds, self._start = 0.0, 0.0
        for child in module.children():
            child.register_forward_pre_hook(self._begin)
            child.register_forward_hook(self._end)

    def _begin(self, *_):
        self._start = time.perf_counter()

    def _end(self, *_):
        self.seconds += time.perf_counter() - self._start


def keyframe_records(out: Path, clips: int) -> list[str]:
    source = out / "source"
    if not any(source.glob("*.mp4")):
        make_clip_set(source, clips, seed=3, duration=(2.0, 4.0), size=(320, 240))
    config = load_config(
        "demo",
        ["runner.kind=local", "runner.progress=false", "stages=[probe,keyframes]", "shards=1"],
    )
    build(config, str(source), str(out / "dataset"), quiet=True)
    rows = Builder(config, None, str(out / "dataset"), runner=None).read_rows("keyframes", 0)
    return list(rows.values())


def measure(name: str, model: str, records: list[str], out: Path) -> dict:
    stage = load_config("demo", [f"{name}.model={model}"]).stage(name)
    stage.setup(StageContext(out=str(out / "dataset")))
    timer = ForwardTimer(stage.net.model)
    samples = [Sample.from_json(r) for r in records]
    frames = sum(s.fields["keyframes"]["count"] for s in samples)
    started = time.perf_counter()
    for i in range(0, len(samples), stage.batch_size):
        stage.process_batch(samples[i : i + stage.batch_size])
    total = time.perf_counter() - started
    failed = sum(1 for s in samples if name in s.errors)
    return {
        "stage": name,
        "model": model,
        "frames": frames,
        "failed": failed,
        "seconds": round(total, 3),
        "frames_per_s": round(frames / total, 1),
        "forward_s": round(timer.seconds, 3),
        "outside_forward_share": round(1 - timer.seconds / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--out", default="bench-out/models")
    args = parser.parse_args()
    out = Path(args.out)
    records = keyframe_records(out, args.clips)
    results = [measure(name, model, records, out) for name, model in STAGES]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model stages on CPU, tiny models, {len(records)} clips")
    for column in ("stage", "model", "frames/s", "forward s", "stage s", "outside forward"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r["stage"],
            r["model"],
            f"{r['frames_per_s']}",
            f"{r['forward_s']}",
            f"{r['seconds']}",
            f"{r['outside_forward_share']:.0%}",
        )
    Console().print(table)
    print(json.dumps(results, indent=1))
    (out / "bench_models.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
