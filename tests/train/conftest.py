"""Fixtures of the trainer tests: generated captioned clips built into real shards (once per
session), hand-made shards for the data tests, one shared frozen text tower, small configs.

Torch runs on one thread here: the models are tiny, and on a shared 2-core machine a second
thread spends its time spinning (a step took 10x longer with two threads than with one).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidal.config import load_config
from vidal.media.synth import caption_grid, make_clip
from vidal.train.config import DataConfig, EncoderConfig, TrainConfig

CLIPS, TRAIN_CLIPS = 120, 96  # every shape/colour/motion combo once; the last 24 are held out


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Built:
    root: Path
    train: str  # shard pattern of the 96 training clips (4 shards)
    held_out: str  # shard pattern of the 24 held-out clips (1 shard)
    combos: list[dict]


def build_shards(source: Path, out: Path, shards: int, *stages: str) -> str:
    from vidal.run.jobs import build

    overrides = ["runner.kind=local", "runner.progress=false", f"shards={shards}"]
    config = load_config("demo", [*overrides, f"stages=[{','.join(stages)}]", *_depth(stages)])
    outcome = build(config, str(source), str(out), quiet=True)
    assert outcome.exit_code == 0, outcome.failure
    return str(out / "shards" / "vidal-*.tar")


def _depth(stages) -> list[str]:
    return ["depth.model=tiny:glpn", "depth.inference_size=64"] if "depth" in stages else []


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """120 generated 2 s clips (96 x 96, 8 fps, no audio) whose titles say what they show;
    the first 96 built into 4 training shards, the last 24 (unseen combos) into 1."""
    root = tmp_path_factory.mktemp("train_data")
    combos = caption_grid(CLIPS, seed=0)
    for i, combo in enumerate(combos):
        folder = root / ("train" if i < TRAIN_CLIPS else "heldout")
        path = folder / f"clip{i:03d}.mp4"
        attrs = {k: combo[k] for k in ("shape", "colour", "motion")}
        meta = make_clip(path, duration=2.0, width=96, height=96, fps=8, audio=False, **attrs)
        path.with_suffix(".json").write_text(json.dumps({"title": meta["title"]}))
    train = build_shards(root / "train", root / "train-out", 4, "probe", "clip")
    held_out = build_shards(root / "heldout", root / "heldout-out", 1, "probe", "clip")
    return Built(root, train, held_out, combos)


def learning_config(built: Built, out: Path, steps: int = 60) -> TrainConfig:
    """The learning recipe: MiniLM frozen, a 2-layer 64-wide ViT on 32 x 32 frames."""
    return TrainConfig(
        shards=built.train,
        out=str(out),
        steps=steps,
        lr=3e-3,
        warmup_steps=8,
        log_every=10,
        checkpoint_every=steps,
        data=DataConfig(image_size=32, batch_size=32, workers=2, shuffle_buffer=100),
        encoder=EncoderConfig(
            hidden_size=64, layers=2, heads=4, patch_size=8, image_size=32, lora_rank=0
        ),
    )


@pytest.fixture(scope="session")
def learned(built, tmp_path_factory) -> dict:
    """The learning run, once per session: its summary (with held-out retrieval), out dir,
    and wall seconds."""
    from vidal.train.run import run_train

    out = tmp_path_factory.mktemp("learned")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        summary = run_train(learning_config(built, out), held_out=built.held_out)
    finally:
        torch.set_num_threads(threads)
    return {"summary": summary, "out": out, "seconds": time.perf_counter() - started}


def small_config(shards: str, out: Path, **overrides) -> TrainConfig:
    """A very small video run: 16 x 16 frames, 4 patches, one 32-wide layer."""
    data = {"image_size": 16, "batch_size": 8, "workers": 0, "shuffle_buffer": 20}
    data.update(overrides.pop("data", {}))
    encoder = {"hidden_size": 32, "layers": 1, "heads": 2, "patch_size": 8, "image_size": 16}
    encoder["lora_rank"] = 0
    encoder.update(overrides.pop("encoder", {}))
    settings = {"steps": 4, "lr": 1e-3, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 4}
    settings.update(overrides)
    return TrainConfig(
        shards=shards,
        out=str(out),
        data=DataConfig(**data),
        encoder=EncoderConfig(**encoder),
        **settings,
    )


@pytest.fixture(scope="session")
def text_tower():
    from vidal.train.encoders import TextTower

    return TextTower()


@pytest.fixture
def shared_text(text_tower, monkeypatch):
    """Trainers and evaluation in this process reuse one loaded MiniLM (a load costs seconds;
    the tower is frozen, so sharing it changes no result)."""
    from vidal.train import evaluate, loop

    def make(ref="minilm", *args, **kwargs):
        assert ref == "minilm"
        return text_tower

    monkeypatch.setattr(loop, "TextTower", make)
    monkeypatch.setattr(evaluate, "TextTower", make)
    return text_tower


# --- hand-made shards -----------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def depth_tiles(values_mm: list[int], size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A tiled uint16 depth image: frame k is a constant `values_mm[k]`."""
    h, w = size
    return np.concatenate([np.full((h, w), v, dtype=np.uint16) for v in values_mm], axis=1)


def depth_sample(key: str, caption: str, values_mm: list[int] | None = None, **text) -> dict:
    values_mm = values_mm or [1000 * (k + 1) for k in range(8)]
    meta = {
        "title": caption,
        "text": {"raw": caption, **text},
        "frames": {"count": len(values_mm), "width": 8, "height": 8},
    }
    return {
        "__key__": key,
        "json": json.dumps(meta).encode(),
        "depth.png": png_bytes(depth_tiles(values_mm)),
    }


def write_tar(path: Path, samples: list[dict]) -> Path:
    """A shard as vidal writes it: a sample's members adjacent, named KEY.EXT."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext == "__key__":
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def depth_shards(tmp_path) -> tuple[str, list[str]]:
    """Four shards of 6 small depth samples each: (brace pattern, all keys)."""
    keys = []
    for shard in range(4):
        samples = [depth_sample(f"s{shard}-{i}", f"caption {shard} {i}") for i in range(6)]
        keys += [s["__key__"] for s in samples]
        write_tar(tmp_path / "shards" / f"d-{shard:05d}.tar", samples)
    return str(tmp_path / "shards" / "d-{00000..00003}.tar"), keys


def depth_data(**overrides) -> DataConfig:
    settings = {"modality": "depth", "image_size": 8, "batch_size": 4, "workers": 0}
    settings["shuffle_buffer"] = 10
    settings.update(overrides)
    return DataConfig(**settings)
