"""LanguageBind's vision tower, in the parameter names of transformers' CLIP.

LanguageBind (model/process_clip.py, model/base_model.py) turns a CLIP vision tower into each
modality's encoder: patch dropout after the embeddings (for video the same patches in every
frame), temporal attention in every layer for video (a copy of the layer's spatial attention
and LN1 plus a per-layer temporal embedding, applied before the spatial attention), and for
audio a position table resized once to the fbank's patch grid. Pooling: each image's (frame's)
CLS token, post-LN, then the mean over frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer

from vidal.train.config import EncoderConfig


class PatchDropout(nn.Module):
    """Keeps the CLS token and a random subset of patch tokens while training (FLIP /
    LanguageBind). With `frames` > 1 the rows are frames of clips, (clip, frame)-ordered, and
    each clip keeps the same patches in all its frames, so that temporal attention still
    mixes one position across time."""

    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, tokens: torch.Tensor, frames: int = 1) -> torch.Tensor:
        if not self.training or self.ratio <= 0:
            return tokens
        cls, patches = tokens[:, :1], tokens[:, 1:]
        keep = max(1, int(patches.shape[1] * (1 - self.ratio)))
        clips = patches.shape[0] // frames
        order = torch.rand(clips, patches.shape[1], device=patches.device).argsort(dim=1)
        order = order[:, :keep].repeat_interleave(frames, dim=0)
        kept = patches.gather(1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls, kept], dim=1)


class TemporalEncoderLayer(CLIPEncoderLayer):
    """A CLIP layer with LanguageBind's temporal attention before its spatial attention:
    every token position attends across the clip's frames (after a temporal embedding is
    added to the residual stream); then the layer's own spatial attention and MLP."""

    def __init__(self, config, num_frames: int):
        super().__init__(config)
        dim = config.hidden_size
        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.randn(1, num_frames, dim) * dim**-0.5)
        self.temporal_attn = CLIPAttention(config)
        self.temporal_layer_norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    @classmethod
    def from_spatial(cls, layer: CLIPEncoderLayer, config, num_frames: int):
        """LanguageBind's initialisation: temporal attention and its LN copied from the
        layer's spatial attention and LN1."""
        new = cls(config, num_frames)
        missing, _ = new.load_state_dict(layer.state_dict(), strict=False)
        assert all(name.startswith("temporal_") for name in missing), missing
        new.temporal_attn.load_state_dict(layer.self_attn.state_dict())
        new.temporal_layer_norm1.load_state_dict(layer.layer_norm1.state_dict())
        return new

    def forward(self, hidden_states, attention_mask=None, frames: int | None = None, **kwargs):
        frames = frames or self.num_frames
        rows, tokens, dim = hidden_states.shape
        x = hidden_states.view(rows // frames, frames, tokens, dim).transpose(1, 2)
        x = (x + self.temporal_embedding[:, :frames]).reshape(-1, frames, dim)
        x = x + self.temporal_attn(self.temporal_layer_norm1(x))[0]
        x = x.view(rows // frames, tokens, frames, dim).transpose(1, 2).reshape(rows, tokens, dim)
        return super().forward(x, attention_mask)


def add_temporal_attention(encoder: nn.Module, config, num_frames: int) -> None:
    """Every layer of a CLIP encoder becomes a TemporalEncoderLayer (process_clip.py)."""
    for index, layer in enumerate(encoder.layers):
        encoder.layers[index] = TemporalEncoderLayer.from_spatial(layer, config, num_frames)


def resize_positions(embeddings: nn.Module, grid: tuple[int, int]) -> None:
    """The position table resized once to a (rows, cols) patch grid, bicubic with
    antialiasing as LanguageBind's resize_pos does for audio (126 x 1036 at patch 14: 9 x 74).
    The CLS position is kept as it is."""
    old = embeddings.position_embedding.weight.detach()
    if old.shape[0] == grid[0] * grid[1] + 1:
        return
    side = int(math.isqrt(old.shape[0] - 1))
    image = old[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=grid, mode="bicubic", antialias=True, align_corners=False)
    table = torch.cat([old[:1], image.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])
    embeddings.position_embedding = nn.Embedding(table.shape[0], table.shape[1])
    embeddings.position_embedding.weight.data.copy_(table.to(old.dtype))
    embeddings.num_patches, embeddings.num_positions = grid[0] * grid[1], table.shape[0]
    positions = torch.arange(table.shape[0]).unsqueeze(0)
    embeddings.register_buffer("position_ids", positions, persistent=False)


def embed(embeddings: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLIP's patch + class + position embeddings, for the one input size the table fits
    (LanguageBind interpolates nothing per call)."""
    weight = embeddings.patch_embedding.weight
    patches = embeddings.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
    positions = embeddings.position_embedding.weight
    if patches.shape[1] + 1 != positions.shape[0]:
        raise ValueError(
            f"an input of {tuple(pixel_values.shape[-2:])} gives {patches.shape[1]} patches; "
            f"the encoder's position table has {positions.shape[0] - 1}"
        )
    cls = embeddings.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
    return torch.cat([cls, patches], dim=1) + positions.to(patches.dtype)


def load_clip(ref: str):
    """(vision model, visual projection) of a CLIP checkpoint: an HF folder or hub id of a
    full CLIP model or a vision tower with projection, or `tiny:clip`."""
    if ref.startswith("tiny:"):
        from vidal.models import tiny

        model = tiny.build(ref.split(":", 1)[1]).model
        return model.vision_model, model.visual_projection
    from transformers import AutoConfig, CLIPModel, CLIPVisionModelWithProjection

    kind = AutoConfig.from_pretrained(ref).model_type
    cls = CLIPModel if kind == "clip" else CLIPVisionModelWithProjection
    model = cls.from_pretrained(ref)
    return model.vision_model, model.visual_projection


def random_clip(cfg: EncoderConfig, out_dim: int, intermediate: int | None = None):
    """A randomly initialised CLIP vision tower and projection into `out_dim`."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=intermediate or 4 * cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
        projection_dim=out_dim,
    )
    model = CLIPVisionModelWithProjection(config)
    return model.vision_model, model.visual_projection
