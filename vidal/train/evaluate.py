"""Zero-shot evaluation: text<->modality retrieval on held-out shards, and classification
from a folder of labelled samples with prompt templates.

Held-out texts are one fixed view of json.text, `data.eval_text_view` (default the video
caption, raw where a sample lacks it), never a random draw; a view holding several captions of
one video gives several queries for it (text->modality ranks each; modality->text counts the
best-ranked of its own captions). Templates (vidal/train/templates/): LanguageBind's 80 depth
templates, the 80 ImageNet templates for infrared (LLVIP), "a sound of {}." for audio.
"""

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

TEMPLATE_FILES = {
    "video": "video.txt",
    "depth": "depth.txt",
    "infrared": "imagenet.txt",
    "audio": "audio.txt",
}
EXTENSIONS = {
    "video": {".mp4", ".mkv", ".webm", ".mov"},
    "depth": {".png"},
    "infrared": {".png", ".jpg", ".jpeg"},
    "audio": {".flac", ".wav"},
}


def load_templates(modality: str) -> list[str]:
    """The zero-shot prompt templates of a modality ('{}' is the class name)."""
    text = (Path(__file__).parent / "templates" / TEMPLATE_FILES[modality]).read_text()
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def load_trained(checkpoint: str | Path, device: str = "cpu"):
    """(encoder, text tower, data config) from a `vidal train` checkpoint."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    cfg = state["config"]
    data_cfg = DataConfig(**cfg["data"])
    text = TextTower(cfg["text_model"]).to(device)
    clip_source = text.ref if text.is_clip else None
    encoder = ModalityEncoder(
        data_cfg.modality, EncoderConfig(**cfg["encoder"]), text.dim, data_cfg, clip_source
    )
    weights = {
        k[len("encoder.") :]: v for k, v in state["model"].items() if k.startswith("encoder.")
    }
    encoder.load_state_dict(weights)
    return encoder.to(device).eval(), text, data_cfg


@torch.no_grad()
def embed_shards(encoder, text: TextTower, urls, data_cfg: DataConfig):
    """Unit embeddings of every sample in the shards (eval preprocessing, in order) and of
    their held-out captions: (modality (N, d), texts (M, d), owner (M,): the sample each text
    describes, keys (N))."""
    loader, _ = make_loader(urls, replace(data_cfg, workers=min(data_cfg.workers, 2)), train=False)
    device = next(encoder.parameters()).device
    feats, texts, owner, keys = [], [], [], []
    for batch in loader:
        feats.append(encoder(batch["input"].to(device)).float().cpu())
        for key, captions in zip(batch["key"], batch["captions"], strict=True):
            owner += [len(keys)] * len(captions)
            keys.append(key)
        texts.append(text([c for captions in batch["captions"] for c in captions]).float().cpu())
    return torch.cat(feats), torch.cat(texts), torch.tensor(owner), keys


def retrieval_metrics(
    modality: torch.Tensor, text: torch.Tensor, owner: torch.Tensor | None = None
) -> dict:
    """R@1/5/10 and median rank, text->modality and modality->text; text i describes sample
    owner[i] (default i). A sample with several texts ranks by its best-placed one."""
    owner = torch.arange(len(text)) if owner is None else torch.as_tensor(owner)
    sims = text @ modality.T
    own = owner.unsqueeze(0) == torch.arange(len(modality)).unsqueeze(1)  # (samples, texts)
    # a tie counts against the sample: a collapsed encoder (every output alike, or zero)
    # must not read as perfect retrieval
    best_own = sims.T.masked_fill(~own, float("-inf")).max(dim=1).values
    ranks = {
        "text_to_modality": (sims >= sims.gather(1, owner.unsqueeze(1))).sum(dim=1),
        "modality_to_text": (sims.T - best_own.unsqueeze(1) >= 0).sum(dim=1),
    }
    out = {"samples": len(modality), "texts": len(text)}
    out["chance_r1"] = round(1 / max(1, len(modality)), 4)
    for name, rank in ranks.items():
        out[name] = {f"R@{k}": round((rank <= k).float().mean().item(), 4) for k in (1, 5, 10)}
        out[name]["median_rank"] = float(rank.float().quantile(0.5).item())  # 5.5 of 1..10
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
        return preprocess.audio_tensor(
            data, data_cfg.audio_frames, data_cfg.audio_bins, data_cfg.audio_sample_rate
        )
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
    prompts = templates or load_templates(data_cfg.modality)
    prompts = torch.stack([text([t.format(lbl) for t in prompts]).mean(0) for lbl in labels])
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
