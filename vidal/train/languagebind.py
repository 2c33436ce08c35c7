"""LanguageBind's checkpoint layout: start `vidal train` from one, export a trained encoder as one.

The layout was reconstructed from what is known of LanguageBind's model code
(model/base_model.py, model/process_clip.py: a transformers CLIPModel whose vision layers gain
`temporal_attn`, `temporal_layer_norm1` and `temporal_embedding`, whose audio position table is
resized to the fbank's patch grid, and whose vision encoder is wrapped by peft for LoRA),
without access to the upstream code: it is not verified against LanguageBind's own classes.

Read: an HF-style folder (config.json + model.safetensors or pytorch_model.bin) or a training
checkpoint file (.pt/.bin/.safetensors, open_clip style with a `state_dict`). Names are
normalised: a DDP `module.` prefix and peft's `base_model.model.` / `.base_layer` are dropped and
LoRA pairs are merged into their weights (scale lora_alpha / r, alpha from the config or 16).
Written: config.json (`model_type` LanguageBindVideo / Audio / Depth / Thermal, the CLIP text
and vision configs plus LanguageBind's extra vision fields) and model.safetensors with merged
LoRA, in CLIPModel names (`vision_model.*`, `visual_projection.weight`, `logit_scale`, and the
text tower's `text_model.*`, `text_projection.weight` when it is a CLIP model).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from vidal.train.config import DataConfig, EncoderConfig
from vidal.train.vision import random_clip

MODEL_TYPES = {
    "video": "LanguageBindVideo",
    "audio": "LanguageBindAudio",
    "depth": "LanguageBindDepth",
    "infrared": "LanguageBindThermal",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
STATE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
DEFAULT_LORA_ALPHA = 16.0  # LanguageBind's alpha for every modality


def is_layout(source: str | None) -> bool:
    """A LanguageBind folder (config.json naming a LanguageBind model type) or state file."""
    if not source or source.startswith("tiny:"):
        return False
    path = Path(source)
    if path.is_file():
        return path.suffix in STATE_SUFFIXES
    config = path / "config.json"
    if not config.is_file():
        return False
    return str(json.loads(config.read_text()).get("model_type", "")).startswith("LanguageBind")


def _load_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def read_state(source: str) -> dict:
    """{"state": normalised tensors, "config": config.json (or {})}."""
    path = Path(source)
    config = {}
    if path.is_dir():
        config = json.loads((path / "config.json").read_text())
        files = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not files:
            raise FileNotFoundError(f"{path} has none of {', '.join(WEIGHT_FILES)}")
        path = files[0]
    alpha = config.get("vision_config", {}).get("lora_alpha", DEFAULT_LORA_ALPHA)
    return {"state": normalise(_load_file(path), alpha), "config": config}


def normalise(state: dict, lora_alpha: float = DEFAULT_LORA_ALPHA) -> dict:
    """DDP and peft names to CLIPModel names; LoRA merged into the weights it adapts."""
    plain, lora = {}, {}
    for name, tensor in state.items():
        name = re.sub(r"^module\.", "", name).replace("base_model.model.", "")
        name = name.replace(".base_layer.", ".")
        match = re.match(r"(.*)\.lora_([AB])(?:\.default)?\.weight$", name)
        if match:
            lora.setdefault(match.group(1), {})[match.group(2)] = tensor.float()
        else:
            plain[name] = tensor
    for module, pair in lora.items():
        down, up = pair["A"], pair["B"]
        weight = plain[f"{module}.weight"]
        delta = (up @ down) * (lora_alpha / down.shape[0])
        plain[f"{module}.weight"] = (weight.float() + delta).to(weight.dtype)
    return plain


def skeleton(lb: dict, cfg: EncoderConfig):
    """A randomly initialised CLIP vision tower and projection of the checkpoint's sizes."""
    state, vision = lb["state"], lb["config"].get("vision_config", {})
    hidden = state["vision_model.embeddings.class_embedding"].shape[0]
    patch = state["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    layers = {int(m) for k in state for m in re.findall(r"encoder\.layers\.(\d+)\.", k)}
    positions = state["vision_model.embeddings.position_embedding.weight"].shape[0] - 1
    sizes = EncoderConfig(
        hidden_size=hidden,
        layers=len(layers),
        heads=vision.get("num_attention_heads", cfg.heads),
        patch_size=patch,
        # a square grid; an audio table (9 x 74) is resized to its grid before the load
        image_size=patch * max(1, math.isqrt(positions)),
    )
    intermediate = state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    vision_model, projection = random_clip(
        sizes, state["visual_projection.weight"].shape[0], intermediate
    )
    return vision_model, projection


def load_into(encoder, lb: dict) -> None:
    """The checkpoint's vision tower and projection, strictly (names and shapes must match the
    encoder built for the modality); its temperature is kept for the loss."""
    state = lb["state"]
    prefix = "vision_model."
    vision = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    encoder.vision_model.load_state_dict(vision, strict=True)
    encoder.visual_projection.load_state_dict({"weight": state["visual_projection.weight"]})
    if "logit_scale" in state:
        encoder.start_logit_scale = float(state["logit_scale"].reshape(-1)[0])


def merged_vision_state(encoder) -> dict[str, torch.Tensor]:
    """The encoder's vision tower and projection in CLIPModel names, LoRA merged."""
    import copy

    vision = copy.deepcopy(encoder.vision_model)
    if encoder.lora_rank:
        vision.encoder = vision.encoder.merge_and_unload()
    state = {f"vision_model.{k}": v for k, v in vision.state_dict().items()}
    state["visual_projection.weight"] = encoder.visual_projection.weight.detach().clone()
    return state


def vision_config(encoder, data: DataConfig, cfg: EncoderConfig) -> dict:
    config = encoder.vision_model.config.to_dict()
    config.update(
        projection_dim=encoder.visual_projection.out_features,
        add_time_attn=encoder.modality == "video",
        num_frames=data.num_frames if encoder.modality == "video" else 1,
        lora_r=encoder.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        force_patch_dropout=encoder.patch_dropout.ratio,
    )
    if encoder.modality == "audio":
        config.update(
            image_size=[data.audio_bins, data.audio_frames],
            num_mel_bins=data.audio_bins,
            target_length=data.audio_frames,
            audio_sample_rate=data.audio_sample_rate,
        )
    return config


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """A `vidal train` checkpoint as a LanguageBind model folder (see the module docstring)."""
    from safetensors.torch import save_file

    from vidal.train.evaluate import load_trained

    encoder, text, data = load_trained(checkpoint)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = EncoderConfig(**saved["config"]["encoder"])
    state = merged_vision_state(encoder)
    state["logit_scale"] = saved["model"]["loss.logit_scale"].detach().clone()
    config = {
        "architectures": [MODEL_TYPES[data.modality]],
        "model_type": MODEL_TYPES[data.modality],
        "projection_dim": encoder.visual_projection.out_features,
        "vision_config": vision_config(encoder, data, cfg),
        "vidal": {"text_model": text.ref, "layout": "reconstructed, unverified upstream"},
    }
    if text.is_clip:
        state.update({f"text_model.{k}": v for k, v in text.model.state_dict().items()})
        state["text_projection.weight"] = text.projection.weight.detach().clone()
        config["text_config"] = text.model.config.to_dict()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    tmp.replace(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
    return out
