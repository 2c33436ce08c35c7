"""Encoders: a frozen language tower and one trainable CLIP vision tower per modality, built
as LanguageBind builds them (model/build_model.py, model/process_clip.py).

The vision tower *and its visual projection* come from one CLIP model: the checkpoint of the
frozen text tower when that is a CLIP model (LanguageBind: the same DataComp ViT-L/14 for
both), `encoder.init_from` when given (a CLIP or a LanguageBind checkpoint), else a randomly
initialised CLIP vision tower of the configured size whose projection maps into the text
space. Trainable: LoRA on the attention (the temporal attention for video, the spatial one
otherwise) or, with rank 0, every encoder layer; plus the class embedding, the post-LN, the
projection and (for video) the temporal embeddings and temporal LN. Frozen: patch and position
embeddings and the pre-LN.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidal.models.text_embed import model_path
from vidal.train import languagebind
from vidal.train.config import MINILM, DataConfig, EncoderConfig
from vidal.train.vision import (
    PatchDropout,
    TemporalEncoderLayer,
    add_temporal_attention,
    embed,
    load_clip,
    random_clip,
    resize_positions,
)

# LanguageBind's patch-dropout ratios and LoRA ranks per modality (scripts/*_language/train.sh)
PATCH_DROPOUT = {"video": 0.3, "audio": 0.1, "depth": 0.5, "infrared": 0.5}
LORA_RANK = {"video": 16, "audio": 16, "depth": 2, "infrared": 2}
SPATIAL_LORA = ["q_proj", "k_proj", "v_proj", "out_proj"]
TEMPORAL_LORA = [f"temporal_attn.{name}" for name in SPATIAL_LORA]
FROZEN = ("embeddings.patch_embedding", "embeddings.position_embedding", "pre_layrnorm")


class ModalityEncoder(nn.Module):
    """(B, 3, H, W) — (B, T, 3, H, W) for video — to unit vectors in the text space."""

    def __init__(
        self,
        modality: str,
        cfg: EncoderConfig,
        out_dim: int,
        data: DataConfig | None = None,
        clip_source: str | None = None,
    ):
        super().__init__()
        data = data or DataConfig(modality=modality)
        self.modality, self.num_frames = modality, data.num_frames
        self.start_logit_scale: float | None = None  # a LanguageBind checkpoint's temperature
        self._start(cfg.init_from or clip_source, cfg, out_dim, data)
        if self.visual_projection.out_features != out_dim:
            raise ValueError(
                f"the vision checkpoint projects to {self.visual_projection.out_features} "
                f"dimensions, the text tower gives {out_dim}: start both from the same CLIP "
                "checkpoint"
            )
        ratio = PATCH_DROPOUT[modality] if cfg.patch_dropout is None else cfg.patch_dropout
        self.patch_dropout = PatchDropout(ratio)
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.lora_rank = LORA_RANK[modality] if cfg.lora_rank is None else cfg.lora_rank
        if self.lora_rank:
            self._add_lora(cfg)
        self._freeze()

    def _start(self, source: str | None, cfg: EncoderConfig, out_dim: int, data: DataConfig):
        """The vision tower and projection: a LanguageBind checkpoint (loaded after the
        modality's shape is built), a CLIP checkpoint, or a random CLIP of the config's size."""
        lb_state = languagebind.read_state(source) if languagebind.is_layout(source) else None
        if lb_state is not None:
            vision, projection = languagebind.skeleton(lb_state, cfg)
        elif source:
            vision, projection = load_clip(source)
        else:
            vision, projection = random_clip(cfg, out_dim)
        self.vision_model, self.visual_projection = vision, projection
        self._shape_for(self.modality, data)
        if lb_state is not None:
            languagebind.load_into(self, lb_state)

    def _shape_for(self, modality: str, data: DataConfig) -> None:
        config = self.vision_model.config
        if modality == "video":
            add_temporal_attention(self.vision_model.encoder, config, data.num_frames)
        if modality == "audio":  # the fbank image: mel bins tall, frames wide
            patch = config.patch_size
            grid = (data.audio_bins // patch, data.audio_frames // patch)
            resize_positions(self.vision_model.embeddings, grid)

    def _add_lora(self, cfg: EncoderConfig) -> None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=TEMPORAL_LORA if self.modality == "video" else SPATIAL_LORA,
        )
        # as LanguageBind: the vision encoder (its layers) wrapped, its other weights frozen
        self.vision_model.encoder = get_peft_model(self.vision_model.encoder, config)

    def _freeze(self) -> None:
        for name, param in self.vision_model.named_parameters():
            if name.startswith(FROZEN):
                param.requires_grad_(False)
            elif "temporal_embedding" in name or "temporal_layer_norm1" in name:
                param.requires_grad_(True)

    def layers(self) -> nn.ModuleList:
        encoder = self.vision_model.encoder
        return encoder.get_base_model().layers if self.lora_rank else encoder.layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1] if self.modality == "video" else 1
        images = x.flatten(0, 1) if self.modality == "video" else x
        hidden = self.patch_dropout(embed(self.vision_model.embeddings, images), frames)
        hidden = self.vision_model.pre_layrnorm(hidden)
        for layer in self.layers():
            kwargs = {"frames": frames} if isinstance(layer, TemporalEncoderLayer) else {}
            if self.gradient_checkpointing and self.training:
                hidden = checkpoint(layer, hidden, None, use_reentrant=False, **kwargs)
            else:
                hidden = layer(hidden, None, **kwargs)
        pooled = self.vision_model.post_layernorm(hidden[:, 0])
        if self.modality == "video":
            pooled = pooled.view(-1, frames, pooled.shape[-1]).mean(dim=1)
        return F.normalize(self.visual_projection(pooled), dim=-1)


class TextCache:
    """Text -> embedding, least recently used first out once the entries pass `max_bytes`
    (a run over 10M clips x 12 caption views must not keep them all on every rank)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    @staticmethod
    def size(text: str, vector: torch.Tensor) -> int:
        return vector.numel() * vector.element_size() + len(text.encode()) + 100

    def get(self, text: str) -> torch.Tensor | None:
        vector = self.entries.get(text)
        if vector is not None:
            self.entries.move_to_end(text)
        return vector

    def put(self, text: str, vector: torch.Tensor) -> None:
        if text in self.entries:
            self.entries.move_to_end(text)
            return
        self.entries[text] = vector
        self.bytes += self.size(text, vector)
        while self.bytes > self.max_bytes and self.entries:
            old_text, old = self.entries.popitem(last=False)
            self.bytes -= self.size(old_text, old)

    def __len__(self) -> int:
        return len(self.entries)


class TextTower(nn.Module):
    """A frozen text encoder: a CLIP text tower with its projection (an HF checkpoint or
    `tiny:clip`), or a sentence-transformers model (MiniLM by default). Embeddings of
    repeated captions come from a bounded cache."""

    def __init__(self, ref: str = MINILM, max_length: int = 77, cache_mb: float = 1024):
        super().__init__()
        self.ref, self.max_length = ref, max_length
        self.is_clip = ref.startswith("tiny:") or _model_type(ref) == "clip"
        if self.is_clip:
            self.model, self.projection, self.tokenizer = _clip_text(ref)
            self.dim = self.projection.out_features
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(model_path(ref), device="cpu")
            self.model.max_seq_length = max_length
            self.dim = self.model.get_embedding_dimension()
        self.requires_grad_(False).eval()
        self.cache = TextCache(int(cache_mb * 2**20))

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode (no dropout)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        found = {t: v for t in dict.fromkeys(texts) if (v := self.cache.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, vec in zip(missing, self._embed(missing), strict=True):
                found[text] = vec
                self.cache.put(text, vec)
        device = next(self.parameters()).device
        return torch.stack([found[t] for t in texts]).to(device)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        if not self.is_clip:
            vectors = self.model.encode(
                texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
            )
            return vectors.float().cpu()
        device = next(self.parameters()).device
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}  # no BERT token types
        pooled = self.model(**inputs).pooler_output
        return F.normalize(self.projection(pooled).float(), dim=-1).cpu()


def _model_type(ref: str) -> str | None:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path(ref)).model_type
    except (OSError, ValueError):
        return None  # not a transformers model folder: a sentence-transformers one


def _clip_text(ref: str):
    """(text transformer, text projection, tokenizer) of a CLIP checkpoint or `tiny:clip`."""
    if ref.startswith("tiny:"):
        from vidal.models import tiny

        bundle = tiny.build(ref.split(":", 1)[1])
        return bundle.model.text_model, bundle.model.text_projection, bundle.tokenizer
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection.from_pretrained(ref)
    return model.text_model, model.text_projection, AutoTokenizer.from_pretrained(ref)
