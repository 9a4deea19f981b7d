"""Distillation prediction heads: training-only, dropped before export."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import DistillHeads, LayerwiseHeads


class DistilHubertHeads(nn.Module):
    """Linear(E, inter * N), GELU, then one Linear(inter, target_dim) per target layer."""

    def __init__(self, embed_dim: int, spec: DistillHeads):
        super().__init__()
        self.inter = spec.inter_dim or embed_dim
        self.proj = nn.Linear(embed_dim, self.inter * len(spec.targets))
        self.targets = nn.ModuleList(nn.Linear(self.inter, spec.target_dim) for _ in spec.targets)

    def forward(self, last: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = F.gelu(self.proj(last))
        chunks = h.split(self.inter, dim=-1)
        return tuple(head(chunk) for head, chunk in zip(self.targets, chunks))


class LayerHead(nn.Module):
    def __init__(self, embed_dim: int, target_dim: int, upsample_factor: int):
        super().__init__()
        self.upsampler = (nn.ConvTranspose1d(embed_dim, embed_dim, upsample_factor, stride=upsample_factor)
                          if upsample_factor > 1 else None)
        self.lin_proj = nn.Linear(embed_dim, target_dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if self.upsampler is not None:
            x = self.upsampler(x.transpose(1, 2)).transpose(1, 2)[:, :frames]
        return self.lin_proj(x)


class FitHubertHeads(nn.Module):
    """One head per listed student layer; each upsamples back to the frontend rate when the
    model reduces time, then projects to the teacher width."""

    def __init__(self, embed_dim: int, spec: LayerwiseHeads, upsample_factor: int):
        super().__init__()
        self.layer_ids = spec.layers
        self.heads = nn.ModuleList(LayerHead(embed_dim, spec.target_dim, upsample_factor) for _ in spec.layers)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], frames: int) -> tuple[torch.Tensor, ...]:
        return tuple(head(hidden_states[i], frames) for head, i in zip(self.heads, self.layer_ids))
