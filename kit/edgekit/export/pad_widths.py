"""Pad a model's off-tile widths with zero channels (the rule and its measurements: widths.py).

Exact: a padded conv output channel has zero weights (and bias), so it is zero; the
per-channel GroupNorm maps a zero channel to its (zero) bias, GELU(0) = 0, and the next
conv's weights for that input channel are zero. A padded FFN hidden unit is GELU(0 + 0) = 0
and its output weights are zero.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.encoder import FeedForward
from ..models.frontend import ConvBlock, ConvFrontend
from ..models.model import SpeechEncoder
from ..widths import padded_conv_widths, padded_ffn, padded_spec


def _grow(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`t` zero-padded along `dim` to `size`."""
    if t.shape[dim] == size:
        return t
    shape = list(t.shape)
    shape[dim] = size - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _pad_linear(lin: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> None:
    w = lin.weight.data
    if out_features is not None:
        w = _grow(w, 0, out_features)
        if lin.bias is not None:
            lin.bias = nn.Parameter(_grow(lin.bias.data, 0, out_features), requires_grad=False)
        lin.out_features = out_features
    if in_features is not None:
        w = _grow(w, 1, in_features)
        lin.in_features = in_features
    lin.weight = nn.Parameter(w, requires_grad=False)


def _pad_conv_block(block: ConvBlock, c_in: int, c_out: int) -> None:
    conv = block.conv
    w = _grow(_grow(conv.weight.data, 0, c_out), 1, c_in)
    conv.weight = nn.Parameter(w, requires_grad=False)
    if conv.bias is not None:
        conv.bias = nn.Parameter(_grow(conv.bias.data, 0, c_out), requires_grad=False)
    conv.in_channels, conv.out_channels = c_in, c_out
    if block.norm_kind == "group":
        gn = block.layer_norm
        gn.num_groups = gn.num_channels = c_out
        gn.weight = nn.Parameter(_grow(gn.weight.data, 0, c_out), requires_grad=False)
        gn.bias = nn.Parameter(_grow(gn.bias.data, 0, c_out), requires_grad=False)


def _pad_frontend(fe: ConvFrontend, multiple: int) -> int:
    """Pads the convs to the widths the rule gives; returns how many got wider outputs."""
    count = 0
    for block, (c_in, c_out) in zip(fe.conv_layers, padded_conv_widths(fe.spec, multiple)):
        count += c_out != block.conv.out_channels
        if (c_in, c_out) != (block.conv.in_channels, block.conv.out_channels):
            _pad_conv_block(block, c_in, c_out)
    return count


def _pad_ffn(ffn: FeedForward, multiple: int) -> bool:
    f = ffn.intermediate_dense.out_features
    padded = padded_ffn(f, multiple)
    if padded == f:
        return False
    _pad_linear(ffn.intermediate_dense, out_features=padded)
    _pad_linear(ffn.output_dense, in_features=padded)
    return True


def pad_widths(module: nn.Module, multiple: int | None) -> int:
    """Pad, in place, the widths of every SpeechEncoder inside `module` (module itself
    included) to `multiple`, and give each the padded ArchSpec. Returns how many convs and
    FFNs were padded; 0 for a module with no SpeechEncoder (a lone profiled block, whose
    widths the profile grid already chooses)."""
    if not multiple or multiple <= 1:
        return 0
    count = 0
    for enc in [m for m in module.modules() if isinstance(m, SpeechEncoder)]:
        fe = enc.feature_extractor
        if isinstance(fe, ConvFrontend):
            count += _pad_frontend(fe, multiple)
        for layer in enc.layers:
            if layer.feed_forward is not None:
                count += _pad_ffn(layer.feed_forward, multiple)
        spec = padded_spec(enc.spec, multiple)
        enc.spec = spec
        if isinstance(fe, ConvFrontend):
            fe.spec = spec.frontend
    return count
