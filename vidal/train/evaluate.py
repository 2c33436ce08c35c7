"""Zero-shot evaluation: text<->modality retrieval on held-out shards, and classification
from a folder of labelled samples with prompt templates."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vidal.train import preprocess
from vidal.train.config import DataConfig, EncoderConfig
from vidal.train.data import make_loader
from vidal.train.encoders import ModalityEncoder, TextTower

TEMPLATES = {
    "video": ["a video of a {}.", "a clip of {}.", "{}"],
    "depth": ["a depth photo of a {}.", "a depth map of a {}.", "{}"],
    "infrared": ["an infrared photo of a {}.", "a thermal image of a {}.", "{}"],
    "audio": ["the sound of a {}.", "a recording of {}.", "{}"],
}
EXTENSIONS = {
    "video": {".mp4", ".mkv", ".webm", ".mov"},
    "depth": {".png"},
    "infrared": {".png", ".jpg", ".jpeg"},
    "audio": {".flac", ".wav"},
}


def load_trained(checkpoint: str | Path, device: str = "cpu"):
    """(encoder, text tower, data config) from a `vidal train` checkpoint."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    cfg = state["config"]
    data_cfg = DataConfig(**cfg["data"])
    text = TextTower(cfg["text_model"]).to(device)
    encoder = ModalityEncoder(
        data_cfg.modality, EncoderConfig(**cfg["encoder"]), text.dim, data_cfg.num_frames
    )
    weights = {
        k[len("encoder.") :]: v for k, v in state["model"].items() if k.startswith("encoder.")
    }
    encoder.load_state_dict(weights)
    return encoder.to(device).eval(), text, data_cfg


@torch.no_grad()
def embed_shards(encoder, text: TextTower, urls, data_cfg: DataConfig):
    """Unit embeddings of every sample in the shards (eval preprocessing, in order)."""
    loader, _ = make_loader(urls, replace(data_cfg, workers=min(data_cfg.workers, 2)), train=False)
    device = next(encoder.parameters()).device
    feats, texts, keys = [], [], []
    for batch in loader:
        feats.append(encoder(batch["input"].to(device)).float().cpu())
        texts.append(text(list(batch["text"])).float().cpu())
        keys.extend(batch["key"])
    return torch.cat(feats), torch.cat(texts), keys


def retrieval_metrics(modality: torch.Tensor, text: torch.Tensor) -> dict:
    """R@1/5/10 and median rank, text->modality and modality->text (pair i matches i)."""
    sims = text @ modality.T
    out = {"samples": len(text), "chance_r1": round(1 / max(1, len(text)), 4)}
    for name, matrix in (("text_to_modality", sims), ("modality_to_text", sims.T)):
        target = matrix.diagonal().unsqueeze(1)
        # a tie counts against the sample: a collapsed encoder (every output alike, or zero)
        # must not read as perfect retrieval
        ranks = (matrix >= target).sum(dim=1)
        out[name] = {f"R@{k}": round((ranks <= k).float().mean().item(), 4) for k in (1, 5, 10)}
        out[name]["median_rank"] = float(ranks.float().quantile(0.5).item())  # 5.5 of 1..10
    return out


def labelled_files(folder: Path, modality: str) -> list[tuple[Path, str]]:
    """`folder/<label>/<file>` pairs; label folder names use '_' for spaces."""
    items = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(label_dir.iterdir()):
            if path.suffix.lower() in EXTENSIONS[modality]:
                items.append((path, label_dir.name.replace("_", " ")))
    if not items:
        raise FileNotFoundError(f"no {modality} files under {folder}/<label>/")
    return items


def file_tensor(path: Path, data_cfg: DataConfig) -> torch.Tensor:
    rng, size, data = random.Random(0), data_cfg.image_size, path.read_bytes()
    if data_cfg.modality == "video":
        return preprocess.video_tensor(data, data_cfg.num_frames, size, False, rng)
    if data_cfg.modality == "audio":
        return preprocess.audio_tensor(data, data_cfg.audio_frames)
    from PIL import Image

    image = np.asarray(Image.open(path))
    fn = preprocess.depth_tensor if data_cfg.modality == "depth" else preprocess.infrared_tensor
    return fn(image, 1, size, False, rng)


@torch.no_grad()
def classify(
    encoder,
    text: TextTower,
    folder: str | Path,
    data_cfg: DataConfig,
    templates: list[str] | None = None,
) -> dict:
    """Zero-shot top-1/top-5: each label's prompt embeddings averaged, nearest label wins."""
    items = labelled_files(Path(folder), data_cfg.modality)
    labels = sorted({label for _, label in items})
    templates = templates or TEMPLATES[data_cfg.modality]
    prompts = torch.stack([text([t.format(lbl) for t in templates]).mean(0) for lbl in labels])
    prompts = torch.nn.functional.normalize(prompts.float().cpu(), dim=-1)
    device = next(encoder.parameters()).device
    hits1 = hits5 = 0
    for path, label in items:
        feature = encoder(file_tensor(path, data_cfg).unsqueeze(0).to(device)).float().cpu()
        order = (feature @ prompts.T).squeeze(0).argsort(descending=True).tolist()
        truth = labels.index(label)
        hits1 += order[0] == truth
        hits5 += truth in order[:5]
    n = len(items)
    return {
        "samples": n,
        "classes": len(labels),
        "top1": round(hits1 / n, 4),
        "top5": round(hits5 / n, 4),
        "chance_top1": round(1 / len(labels), 4),
    }
