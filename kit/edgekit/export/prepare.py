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
- attention rewrite (`rewrite_attention`): 3-D bmm instead of 4-D matmul, no expand copies.
- conv extractor rewrite (`conv_rewrite.py`, ExecuTorch only): the waveform convs as
  channels-last frame gathers and linear layers. It halves the extractor's time in ExecuTorch
  and costs TFLite about 15% (its own conv path is already fast), so it is chosen per format
  (`CHANNELS_LAST_CONV`).
- width padding (`pad_widths.py`, ExecuTorch only): pruned off-tile widths (conv channels,
  FFN hidden units) padded with exact zero channels to XNNPACK's tile of 16, which ran such
  convs 1.6-1.8x faster than the unpadded width (widths.py has the figures).
- a wrapper whose forward(wave) returns one tensor, as every lowering expects.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..arch import ArchSpec
from ..models import SpeechEncoder
from ..models.encoder import SelfAttention
from ..widths import PAD_MULTIPLE
from .conv_rewrite import rewrite_conv_frontend
from .pad_widths import pad_widths


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


class LinearLayerNorm(nn.Module):
    """LayerNorm over the last axis with mean and variance as a linear layer against a constant
    [1, E] row of 1/E: XNNPACK runs it as a tiny fully-connected op in the same layout as the
    surrounding linears, so no NCHW<->NHWC transposes are inserted around it."""

    def __init__(self, ln: nn.LayerNorm):
        super().__init__()
        if len(ln.normalized_shape) != 1:
            raise ValueError(f"LinearLayerNorm handles one normalised axis, got {tuple(ln.normalized_shape)}")
        self.dim, self.eps = ln.normalized_shape[0], ln.eps
        self.register_buffer("avg", torch.full((1, self.dim), 1.0 / self.dim))
        self.weight = nn.Parameter(ln.weight.detach().clone()) if ln.weight is not None else None
        self.bias = nn.Parameter(ln.bias.detach().clone()) if ln.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = nn.functional.linear(x, self.avg)  # [..., 1]
        d = x - mean
        var = nn.functional.linear(d * d, self.avg)
        y = d * torch.rsqrt(var + self.eps)
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


class LinearGroupNorm(nn.Module):
    """GroupNorm on [B, C, T] for a fixed T, with group mean and variance as a linear layer
    against a constant [1, C/G * T] row (the window is fixed at export, so T is known)."""

    def __init__(self, gn: nn.GroupNorm, frames: int):
        super().__init__()
        if frames < 1:
            raise ValueError(f"LinearGroupNorm needs the frame count of its input, got {frames}")
        self.groups, self.channels, self.frames, self.eps = gn.num_groups, gn.num_channels, frames, gn.eps
        n = gn.num_channels // gn.num_groups * frames
        self.register_buffer("avg", torch.full((1, n), 1.0 / n))
        self.weight = nn.Parameter(gn.weight.detach().clone().view(1, -1, 1)) if gn.affine else None
        self.bias = nn.Parameter(gn.bias.detach().clone().view(1, -1, 1)) if gn.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        if t != self.frames or c != self.channels:
            raise ValueError(f"LinearGroupNorm built for [*, {self.channels}, {self.frames}], got {tuple(x.shape)}; "
                             "re-prepare the model for this window length")
        xg = x.reshape(b, self.groups, -1)
        mean = nn.functional.linear(xg, self.avg)
        d = xg - mean
        var = nn.functional.linear(d * d, self.avg)
        y = (d * torch.rsqrt(var + self.eps)).view(b, c, t)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y


class BmmAttention(nn.Module):
    """SelfAttention with 3-D bmm over [B*H, T, D]: torch.matmul on 4-D tensors lowers to
    expand_copy + bmm, and XNNPACK leaves the expands on portable kernels (a partition cut per
    matmul). Same weights, same arithmetic; the scale is folded into q_proj."""

    def __init__(self, attn: SelfAttention):
        super().__init__()
        self.heads, self.head_dim = attn.heads, attn.head_dim
        self.q_proj = copy.deepcopy(attn.q_proj)
        with torch.no_grad():
            self.q_proj.weight.mul_(attn.scale)
            self.q_proj.bias.mul_(attn.scale)
        self.k_proj, self.v_proj = copy.deepcopy(attn.k_proj), copy.deepcopy(attn.v_proj)
        self.out_proj = copy.deepcopy(attn.out_proj)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h, d = self.heads, self.head_dim
        q = self.q_proj(x).view(b, t, h, d).transpose(1, 2).reshape(b * h, t, d)
        k = self.k_proj(x).view(b, t, h, d).permute(0, 2, 3, 1).reshape(b * h, d, t)
        v = self.v_proj(x).view(b, t, h, d).transpose(1, 2).reshape(b * h, t, d)
        scores = torch.bmm(q, k)
        if mask_bias is not None:
            scores = (scores.view(b, h, t, t) + mask_bias).view(b * h, t, t)
        ctx = torch.bmm(torch.softmax(scores, dim=-1), v)
        return self.out_proj(ctx.view(b, h, t, d).transpose(1, 2).reshape(b, t, h * d))


def rewrite_attention(module: nn.Module) -> int:
    """Replace every SelfAttention inside `module` with BmmAttention in place; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, SelfAttention):
            setattr(module, name, BmmAttention(child))
            count += 1
        else:
            count += rewrite_attention(child)
    return count


NORM_STYLES = ("none", "pool", "linear")
# The measured best on hubert-base ExecuTorch fp32 (benchmarks/norm_rewrites.py, docs/benchmarks.md).
DEFAULT_LAYER_NORM = "pool"
DEFAULT_GROUP_NORM = "pool"


def _group_norm_frames(module: nn.Module, example: torch.Tensor | None) -> dict[int, int]:
    """id(GroupNorm) -> the T of its [B, C, T] input, found by running `example` once."""
    gns = [m for m in module.modules() if isinstance(m, nn.GroupNorm)]
    if not gns:
        return {}
    if example is None:
        raise ValueError("group_norm='linear' needs an example input to learn each GroupNorm's frame count")
    frames: dict[int, int] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: frames.__setitem__(id(m), int(args[0].shape[-1])))
             for m in gns]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return frames


def rewrite_norms(module: nn.Module, layer_norm: str = DEFAULT_LAYER_NORM, group_norm: str = DEFAULT_GROUP_NORM,
                  example: torch.Tensor | None = None) -> int:
    """Replace LayerNorm / GroupNorm inside `module` in place; returns how many were replaced.

    Styles: "none" keeps the torch op (a portable kernel in ExecuTorch), "pool" the 4-D mean
    (XNNPACK global average pooling), "linear" mean and variance as a linear layer against a
    constant row (GroupNorm "linear" needs `example`, a forward input of `module`, to learn T).
    """
    for what, style in (("layer_norm", layer_norm), ("group_norm", group_norm)):
        if style not in NORM_STYLES:
            raise ValueError(f"{what}={style!r}: expected one of {', '.join(NORM_STYLES)}")
    frames = _group_norm_frames(module, example) if group_norm == "linear" else {}
    return _rewrite_norms(module, layer_norm, group_norm, frames)


def _rewrite_norms(module: nn.Module, layer_norm: str, group_norm: str, frames: dict[int, int]) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.LayerNorm) and len(child.normalized_shape) == 1:
            if layer_norm != "none":
                setattr(module, name, (LinearLayerNorm if layer_norm == "linear" else DelegatedLayerNorm)(child))
                count += 1
        elif isinstance(child, nn.GroupNorm):
            if group_norm == "linear":
                if id(child) not in frames:
                    raise ValueError(f"GroupNorm {name} did not run on the example input; cannot size its mean")
                setattr(module, name, LinearGroupNorm(child, frames[id(child)]))
                count += 1
            elif group_norm == "pool":
                setattr(module, name, DelegatedGroupNorm(child))
                count += 1
        else:
            count += _rewrite_norms(child, layer_norm, group_norm, frames)
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


def quant_skip(spec: ArchSpec) -> tuple[str, ...]:
    """Submodules of the prepared wrapper that int8 must leave in fp32.

    A filterbank frontend computes a power spectrum and its log: values span many decades, and
    one int8 scale for them wipes out the quiet bins (measured: per-frame cosine 0.55 on
    tiny-fbank). It is about 1% of Fast-HuBERT's MACs, so it stays fp32.

    The last conv of a waveform extractor feeds a per-frame LayerNorm: one int8 scale for its
    output rounds quiet frames away before they are normalised back up. Kept fp32 it costs
    about 1% of the extractor's MACs; measured (static int8, PT2E, random weights) per-frame
    cosine 0.9878 -> 0.9941 on hubert-base, 0.9900 -> 0.9948 on lighthubert-small.
    """
    from ..arch import FilterbankFrontend

    if isinstance(spec.frontend, FilterbankFrontend):
        return ("encoder.feature_extractor",)
    return (f"encoder.feature_extractor.conv_layers.{len(spec.frontend.layers) - 1}",)


# Per format: does the channels-last conv extractor make it faster? Measured on hubert-base's
# extractor at 1 s, 2 threads: ExecuTorch 79 -> 42 ms, ONNX Runtime 44 -> 44 ms, TFLite 34 -> 39 ms.
CHANNELS_LAST_CONV = {"executorch": True, "onnx": False, "tflite": False}


def prepare_module(model: SpeechEncoder, spec: ArchSpec, keep_heads: bool = False,
                   rewrite: bool = True, *, attention: bool | None = None,
                   layer_norm: str | None = None, group_norm: str | None = None,
                   conv: bool | None = None, pad: int | None = None, fmt: str | None = None,
                   samples: int | None = None, example: torch.Tensor | None = None) -> nn.Module:
    """A deep copy of `model` ready for export; the caller's model is left untouched.

    `rewrite=False` turns every rewrite off; `attention`, `layer_norm`, `group_norm`, `conv` and
    `pad` pick them one by one (None: the measured default, for `conv` and `pad` the one of
    format `fmt`; `pad` is the multiple widths are padded to, 0 for none: widths.py).
    `samples` is the fixed window the artifact takes, needed by the conv rewrite; `example`
    is a [1, samples] input, needed only by group_norm="linear".
    """
    if not isinstance(model, SpeechEncoder):
        raise ValueError(f"prepare_module expects an edgekit SpeechEncoder, got {type(model).__name__}")
    if keep_heads and (spec.heads is None or model.heads is None):
        raise ValueError(f"--keep-heads: model {spec.name or ''} has no prediction heads; drop the flag")
    enc = copy.deepcopy(model).prepare_for_export()
    if not keep_heads:
        enc.heads = None
    attention = rewrite if attention is None else attention
    layer_norm = (DEFAULT_LAYER_NORM if rewrite else "none") if layer_norm is None else layer_norm
    group_norm = (DEFAULT_GROUP_NORM if rewrite else "none") if group_norm is None else group_norm
    conv = (rewrite and CHANNELS_LAST_CONV.get(fmt, False)) if conv is None else conv
    pad = ((PAD_MULTIPLE.get(fmt) if rewrite else None) or 0) if pad is None else pad
    wrapper = ExportWrapper(enc, keep_heads).eval()
    if conv and samples is None:
        if example is None:
            raise ValueError("the conv extractor rewrite needs the window length: pass samples")
        samples = int(example.shape[-1])
    _rewrite(wrapper, pad, samples if conv else None, layer_norm, group_norm, attention, example)
    return wrapper


def _rewrite(module: nn.Module, pad: int, conv_samples: int | None, layer_norm: str, group_norm: str,
             attention: bool, example: torch.Tensor | None = None) -> None:
    """The export rewrites, in place, in the one order that works: widths padded to `pad` on
    the model's own modules, then the conv extractor (for a window of `conv_samples`; None
    skips it), because the norm rewrite would otherwise replace the extractor's nn.GroupNorm
    with its own."""
    pad_widths(module, pad)
    if conv_samples is not None:
        rewrite_conv_frontend(module, conv_samples)
    rewrite_norms(module, layer_norm, group_norm, example)
    if attention:
        rewrite_attention(module)


def export_form(module: nn.Module, example: torch.Tensor, fmt: str) -> tuple[nn.Module, torch.Tensor]:
    """What the export pipeline's rewrites make of any module for format `fmt`: a whole model
    (its conv extractor sized by `example`, a [1, samples] window) or one block of one. The
    latency profiler lowers every block and model through this, so a table prices the same
    kernels an exported artifact runs. Returns a rewritten copy and the example it takes."""
    module = copy.deepcopy(module)
    conv_samples = None
    if CHANNELS_LAST_CONV.get(fmt, False):
        cl = module.channels_last() if hasattr(module, "channels_last") else None
        if cl is not None:
            # A lone extractor conv block: it takes [B, C, T]; its channels-last form [B, T, C].
            module, example = cl, example.transpose(1, 2).contiguous()
        else:
            conv_samples = int(example.shape[-1])
    _rewrite(module, PAD_MULTIPLE.get(fmt) or 0, conv_samples, DEFAULT_LAYER_NORM, DEFAULT_GROUP_NORM,
             attention=True)
    return module.eval(), example
