"""prepare: turn a SpeechEncoder into the module that gets exported.

- eval mode, weight norm folded (left in the graph it is recomputed every call: the 388 ms
  -> 5 ms ExecuTorch pitfall in toolchains.md);
- training-only prediction heads dropped unless keep_heads;
- norm rewrites (`rewrite_norms`): XNNPACK in ExecuTorch 1.5 delegates neither LayerNorm nor
  GroupNorm, so every norm cuts the graph into another delegate partition with a portable
  kernel in between. The same arithmetic written as a 4-D mean over the two innermost axes
  (which XNNPACK runs as global average pooling), sub, mul, add and rsqrt stays delegated.
  The rewrite is exact up to float rounding (checked in tests); docs/benchmarks.md has what
  it buys.
- a wrapper whose forward(wave) returns one tensor, as every lowering expects.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..arch import ArchSpec
from ..models import SpeechEncoder


class DelegatedLayerNorm(nn.Module):
    """LayerNorm over the last axis of a [B, T, E] tensor, written with ops XNNPACK delegates."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"DelegatedLayerNorm handles one normalised axis, got {tuple(ln.normalized_shape)}")
        self.dim, self.eps = ln.normalized_shape[0], ln.eps
        self.weight = nn.Parameter(ln.weight.detach().clone()) if ln.weight is not None else None
        self.bias = nn.Parameter(ln.bias.detach().clone()) if ln.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            return nn.functional.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        b, t, e = x.shape
        x4 = x.view(b, t, 1, e)
        mean = x4.mean(dim=(2, 3), keepdim=True)
        d = x4 - mean
        var = (d * d).mean(dim=(2, 3), keepdim=True)
        y = (d * torch.rsqrt(var + self.eps)).view(b, t, e)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class DelegatedGroupNorm(nn.Module):
    """GroupNorm on [B, C, T] as a 4-D mean over [B, G, C/G, T]'s two innermost axes."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.groups, self.channels, self.eps = gn.num_groups, gn.num_channels, gn.eps
        self.weight = nn.Parameter(gn.weight.detach().clone().view(1, -1, 1)) if gn.affine else None
        self.bias = nn.Parameter(gn.bias.detach().clone().view(1, -1, 1)) if gn.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        x4 = x.view(b, self.groups, c // self.groups, t)
        mean = x4.mean(dim=(2, 3), keepdim=True)
        d = x4 - mean
        var = (d * d).mean(dim=(2, 3), keepdim=True)
        y = (d * torch.rsqrt(var + self.eps)).view(b, c, t)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y


def rewrite_norms(module: nn.Module) -> int:
    """Replace every LayerNorm / GroupNorm inside `module` in place; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) == 1:
            setattr(module, name, DelegatedLayerNorm(child))
            count += 1
        elif isinstance(child, nn.GroupNorm):
            setattr(module, name, DelegatedGroupNorm(child))
            count += 1
        else:
            count += rewrite_norms(child)
    return count


class ExportWrapper(nn.Module):
    """forward(wave [B, samples]) -> last_hidden_state [B, frames, E], or with keep_heads the
    prediction heads stacked as [B, heads, frames, target_dim]."""

    def __init__(self, encoder: SpeechEncoder, keep_heads: bool):
        super().__init__()
        self.encoder, self.keep_heads = encoder, keep_heads

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        out = self.encoder(wave, with_predictions=self.keep_heads)
        if self.keep_heads:
            return torch.stack(out.predictions, dim=1)
        return out.last_hidden_state


def prepare_module(model: SpeechEncoder, spec: ArchSpec, keep_heads: bool = False,
                   rewrite: bool = True) -> nn.Module:
    """A deep copy of `model` ready for export; the caller's model is left untouched."""
    if not isinstance(model, SpeechEncoder):
        raise ValueError(f"prepare_module expects an edgekit SpeechEncoder, got {type(model).__name__}")
    if keep_heads and (spec.heads is None or model.heads is None):
        raise ValueError(f"--keep-heads: model {spec.name or ''} has no prediction heads; drop the flag")
    enc = copy.deepcopy(model).prepare_for_export()
    if not keep_heads:
        enc.heads = None
    if rewrite:
        rewrite_norms(enc)
    return ExportWrapper(enc, keep_heads).eval()
