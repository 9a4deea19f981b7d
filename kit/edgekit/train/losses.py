"""Distillation losses over [B, T, D] feature sequences, averaged over valid frames only.

`mask` is [B, T] True for valid (non-padding) frames. Student and teacher sequences may differ
by a frame or two when their frontends differ (FitHuBERT's extractor); both are cut to the
shorter one first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None):
    t = min(pred.shape[1], target.shape[1])
    if mask is not None:
        t = min(t, mask.shape[1])
        mask = mask[:, :t]
    return pred[:, :t], target[:, :t], mask


def _masked_mean(per_frame: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """per_frame [B, T] -> scalar mean over valid frames."""
    if mask is None:
        return per_frame.mean()
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp(min=1.0)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    pred, target, mask = align(pred, target, mask)
    return _masked_mean((pred - target).abs().mean(dim=-1), mask)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    pred, target, mask = align(pred, target, mask)
    return _masked_mean(((pred - target) ** 2).mean(dim=-1), mask)


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """-log sigmoid(cos(pred, target)) per frame (DistilHuBERT)."""
    pred, target, mask = align(pred, target, mask)
    cos = F.cosine_similarity(pred, target, dim=-1)
    return _masked_mean(-F.logsigmoid(cos), mask)


def distilhubert_loss(preds, targets, mask=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over target layers of L1 - log sigmoid(cos), as DistilHuBERT."""
    total, parts = 0.0, {}
    for i, (p, t) in enumerate(zip(preds, targets)):
        l1, cos = l1_loss(p, t, mask), cosine_loss(p, t, mask)
        total = total + l1 + cos
        parts[f"l1_{i}"] = float(l1.detach())
        parts[f"cos_{i}"] = float(cos.detach())
    return total, parts


def fithubert_loss(preds, targets, weights, mask=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of per-layer MSE (FitHuBERT: last layer 1.0, hint layers 0.1)."""
    if not (len(preds) == len(targets) == len(weights)):
        raise ValueError(f"internal error: {len(preds)} predictions, {len(targets)} targets, {len(weights)} weights")
    total, parts = 0.0, {}
    for i, (p, t, w) in enumerate(zip(preds, targets, weights)):
        mse = mse_loss(p, t, mask)
        total = total + w * mse
        parts[f"mse_{i}"] = float(mse.detach())
    return total, parts
