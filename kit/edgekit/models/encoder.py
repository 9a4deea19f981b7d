"""Transformer encoder parts with explicit dimensions, so pruned per-layer widths fit directly.

Forward passes avoid data-dependent Python control flow: every branch depends only on the
module's structure, which is fixed once it is built, so torch.export sees one static graph.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import LayerSpec, PosConv, TimeReduction


class SelfAttention(nn.Module):
    """Multi-head self-attention with attention dim = heads x head_dim, which may differ from
    the embedding width (LightHuBERT subnets, pruned heads)."""

    def __init__(self, embed_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        attn_dim = heads * head_dim
        self.q_proj = nn.Linear(embed_dim, attn_dim)
        self.k_proj = nn.Linear(embed_dim, attn_dim)
        self.v_proj = nn.Linear(embed_dim, attn_dim)
        self.out_proj = nn.Linear(attn_dim, embed_dim)
        self.scale = head_dim ** -0.5

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h, d = self.heads, self.head_dim
        q = (self.q_proj(x) * self.scale).view(b, t, h, d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, h, d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, h, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask_bias is not None:
            scores = scores + mask_bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, h * d))


class FeedForward(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int):
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Post-LN (HuBERT Base) or pre-LN (wav2vec 2.0 Large) layer. A pruned-away attention or
    FFN block is absent; in post-LN the LayerNorms are still applied (as DPHuBERT does)."""

    def __init__(self, embed_dim: int, spec: LayerSpec, layer_norm_first: bool):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim, spec.heads, spec.head_dim) if spec.has_attention else None
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim, spec.ffn_dim) if spec.has_ffn else None
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.attention(self.layer_norm(x), mask_bias)
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.attention(x, mask_bias)
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class PositionalConv(nn.Module):
    """Grouped Conv1d positional embedding, optionally weight-normalised over dim=2.

    The weight norm is written out by hand (weight_g, weight_v) rather than with torch's
    parametrisation so the state dict is stable across torch versions and `fold()` can turn
    it into one plain weight: left in an exported graph it is recomputed on every call (the
    388 ms -> 5 ms ExecuTorch pitfall in toolchains.md).
    """

    def __init__(self, embed_dim: int, spec: PosConv):
        super().__init__()
        self.kernel, self.groups = spec.kernel, spec.groups
        shape = (embed_dim, embed_dim // spec.groups, spec.kernel)
        w = torch.randn(shape) * math.sqrt(4.0 / (spec.kernel * embed_dim))
        if spec.weight_norm:
            self.weight_g = nn.Parameter(_tap_norm(w))
            self.weight_v = nn.Parameter(w)
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(embed_dim))

    @property
    def folded(self) -> bool:
        return self.weight is not None

    def effective_weight(self) -> torch.Tensor:
        if self.weight is not None:
            return self.weight
        return self.weight_g * self.weight_v / _tap_norm(self.weight_v)

    @torch.no_grad()
    def fold(self) -> None:
        """Replace g and v by the weight they describe (same output, no per-call norm)."""
        if self.weight is None:
            w = self.effective_weight().detach().clone()
            del self.weight_g, self.weight_v
            self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, E] -> GELU(conv(x)) [B, T, E]; an even kernel's extra frame is dropped."""
        y = F.conv1d(x.transpose(1, 2), self.effective_weight(), self.bias,
                     padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)


def _tap_norm(w: torch.Tensor) -> torch.Tensor:
    """||w|| over every dim but the kernel axis (weight_norm with dim=2), shape [1, 1, K]."""
    return torch.sqrt((w * w).sum(dim=(0, 1), keepdim=True))


class TimeReductionConv(nn.Module):
    """Strided Conv1d that shortens the sequence by `factor` after zero-padding it to a multiple."""

    def __init__(self, embed_dim: int, spec: TimeReduction):
        super().__init__()
        self.factor = spec.factor
        self.conv = nn.Conv1d(embed_dim, embed_dim, spec.kernel, stride=spec.factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (-x.shape[1]) % self.factor
        return self.conv(F.pad(x.transpose(1, 2), (0, pad))).transpose(1, 2)


class Upsampler(nn.Module):
    """ConvTranspose1d(E, E, factor, factor) back to the frontend frame rate."""

    def __init__(self, embed_dim: int, factor: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(embed_dim, embed_dim, factor, stride=factor)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.conv(x.transpose(1, 2)).transpose(1, 2)[:, :frames]
