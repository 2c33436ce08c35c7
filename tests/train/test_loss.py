"""Symmetric InfoNCE with a learnable temperature (clamped by the trainer, after the step)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidal.train.loss import ContrastiveLoss, gather_with_grad


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def by_hand(modality: torch.Tensor, text: torch.Tensor, temperature: float) -> float:
    """-(1/2N) sum_i [log softmax_j(m_i.t_j / T)_i + log softmax_j(t_i.m_j / T)_i]."""
    n = len(modality)
    rows, cols = modality.tolist(), text.tolist()
    sims = [[sum(a * b for a, b in zip(m, t, strict=True)) for t in cols] for m in rows]
    total = 0.0
    for i in range(n):
        row = [s / temperature for s in sims[i]]
        col = [sims[j][i] / temperature for j in range(n)]
        total -= row[i] - math.log(sum(math.exp(v) for v in row))
        total -= col[i] - math.log(sum(math.exp(v) for v in col))
    return total / (2 * n)


def test_symmetric_infonce_equals_the_hand_computation():
    loss_fn = ContrastiveLoss()
    modality, text = unit(4, 5, seed=0), unit(4, 5, seed=1)
    loss, negatives = loss_fn(modality, text)
    assert negatives == 4  # one process: the batch is every sample's candidate set
    assert math.isclose(loss.item(), by_hand(modality, text, 0.07), rel_tol=1e-5)
    # asymmetric pairs: the two directions differ, and the loss is their mean
    text[0] = modality[1]
    loss, _ = loss_fn(modality, text)
    assert math.isclose(loss.item(), by_hand(modality, text, 0.07), rel_tol=1e-5)


def test_matching_pairs_give_a_lower_loss_and_gradients_reach_both_sides():
    loss_fn = ContrastiveLoss()
    modality = unit(6, 8, seed=2).requires_grad_()
    matched, _ = loss_fn(modality, modality.detach())
    shuffled, _ = loss_fn(modality, modality.detach().roll(1, dims=0))
    assert matched < 0.1 < shuffled
    shuffled.backward()
    assert modality.grad.abs().sum() > 0 and loss_fn.logit_scale.grad is not None


def test_temperature_starts_at_007_and_is_not_clamped_in_the_forward():
    """The trainer clamps the parameter after each step (test_loop); a clamp in the forward
    would zero the gradient of a scale past 100, which then could never come back."""
    loss_fn = ContrastiveLoss()
    assert math.isclose(loss_fn.temperature, 0.07, rel_tol=1e-6)
    assert math.isclose(loss_fn.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(200.0))
    assert math.isclose(loss_fn.scale().item(), 200.0, rel_tol=1e-5)
    modality, text = unit(3, 4, seed=3), unit(3, 4, seed=4)
    loss, _ = loss_fn(modality, text)
    assert math.isclose(loss.item(), by_hand(modality, text, 0.005), rel_tol=1e-4)
    loss.backward()
    assert loss_fn.logit_scale.grad.item() != 0.0  # a gradient that can bring it back
    assert math.isclose(ContrastiveLoss(init_temperature=0.2).temperature, 0.2, rel_tol=1e-6)


def test_temperature_is_learned():
    loss_fn = ContrastiveLoss()
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.5)
    modality = unit(8, 4, seed=5)
    for _ in range(5):  # well separated pairs: a sharper softmax lowers the loss
        loss, _ = loss_fn(modality, modality)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_fn.temperature < 0.07


def test_gather_is_the_identity_in_one_process():
    features = torch.randn(3, 4)
    assert gather_with_grad(features) is features
