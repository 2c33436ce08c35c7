"""Symmetric InfoNCE with a learnable temperature; negatives gathered from every process."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """All processes' features, concatenated; gradients flow back to this process's part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features), dim=0)


class ContrastiveLoss(nn.Module):
    """The learnable log-scale starts at ln(1 / 0.07); the trainer clamps it to [0, ln 100]
    after each optimizer step (open_clip / LanguageBind), not here: a clamp in the forward
    would cut the gradient of a scale past 100, which then could never come back."""

    def __init__(self, init_temperature: float = 0.07):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale().item()

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def forward(self, modality: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Loss and the number of candidates each sample was contrasted with."""
        all_modality, all_text = gather_with_grad(modality), gather_with_grad(text)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        labels = torch.arange(modality.shape[0], device=modality.device) + rank * modality.shape[0]
        scale = self.scale()
        logits_m2t = scale * modality @ all_text.T
        logits_t2m = scale * text @ all_modality.T
        loss = (F.cross_entropy(logits_m2t, labels) + F.cross_entropy(logits_t2m, labels)) / 2
        return loss, all_text.shape[0]
