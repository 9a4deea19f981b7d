"""SpeechEncoder: the one nn.Module edgekit builds from an ArchSpec."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..arch import ArchSpec, DistillHeads, FilterbankFrontend, WaveformFrontend
from .encoder import EncoderLayer, PositionalConv, TimeReductionConv, Upsampler
from .frontend import build_frontend
from .heads import DistilHubertHeads, FitHubertHeads


class EncoderOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [B, frames, E]
    hidden_states: tuple[torch.Tensor, ...]  # input to layer 1, then every layer's output
    predictions: tuple[torch.Tensor, ...] | None = None  # distillation heads, when asked for


class SpeechEncoder(nn.Module):
    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        e, fd = spec.embed_dim, spec.frontend.out_dim
        self.feature_extractor = build_frontend(spec.frontend)
        self.feature_layer_norm = nn.LayerNorm(fd) if spec.feature_layer_norm else None
        self.projection = nn.Linear(fd, e)
        self.mask_emb = nn.Parameter(torch.zeros(e).uniform_()) if spec.mask_emb else None
        self.pos_conv = PositionalConv(e, spec.pos_conv) if spec.pos_conv is not None else None
        self.encoder_layer_norm = nn.LayerNorm(e)
        tr = spec.time_reduction
        self.time_reduction = TimeReductionConv(e, tr) if tr is not None else None
        self.upsampler = Upsampler(e, tr.factor) if tr is not None and tr.upsample else None
        self.layers = nn.ModuleList(EncoderLayer(e, layer, spec.layer_norm_first) for layer in spec.layers)
        if spec.heads is None:
            self.heads = None
        elif isinstance(spec.heads, DistillHeads):
            self.heads = DistilHubertHeads(e, spec.heads)
        else:
            self.heads = FitHubertHeads(e, spec.heads, tr.factor if tr is not None else 1)

    # ------------------------------------------------------------------ lengths
    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid frames per item for `lengths` valid samples (same formula as ArchSpec)."""
        fe = self.spec.frontend
        n = lengths
        if isinstance(fe, WaveformFrontend):
            for layer in fe.layers:
                n = torch.div(n - layer.kernel, layer.stride, rounding_mode="floor") + 1
        else:
            assert isinstance(fe, FilterbankFrontend)
            n = torch.div(n - fe.win_length, fe.hop_length, rounding_mode="floor") + 1
            for layer in fe.subsampler:
                n = torch.div(n + 2 * (layer.kernel // 2) - layer.kernel, layer.stride, rounding_mode="floor") + 1
        return n.clamp(min=0)

    # ------------------------------------------------------------------ forward
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                with_predictions: bool = False) -> EncoderOutput:
        feats = self.feature_extractor(wave)
        if self.feature_layer_norm is not None:
            feats = self.feature_layer_norm(feats)
        x = self.projection(feats)
        frames = x.shape[1]
        valid = None
        if lengths is not None:
            valid = torch.arange(frames, device=x.device)[None, :] < self.frame_lengths(lengths)[:, None]
            x = x * valid[..., None].to(x.dtype)
        if self.pos_conv is not None:
            x = x + self.pos_conv(x)
        if not self.spec.layer_norm_first:
            x = self.encoder_layer_norm(x)
        bias = _mask_bias(valid, x.dtype)
        tr = self.spec.time_reduction
        hidden: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            if tr is not None and i == tr.before_layer:
                x = self.time_reduction(x)
                if valid is not None:
                    valid = _reduce_valid(valid, tr.factor, x.shape[1])
                    bias = _mask_bias(valid, x.dtype)
            if i == 0:
                hidden.append(x)
            x = layer(x, bias)
            hidden.append(x)
        if self.spec.layer_norm_first:
            x = self.encoder_layer_norm(x)
            hidden[-1] = x
        if self.upsampler is not None:
            x = self.upsampler(x, frames)
        predictions = None
        if with_predictions and self.heads is not None:
            if isinstance(self.heads, DistilHubertHeads):
                predictions = self.heads(x)
            else:
                predictions = self.heads(tuple(hidden), frames)
        return EncoderOutput(x, tuple(hidden), predictions)

    # ------------------------------------------------------------------ export
    def prepare_for_export(self) -> "SpeechEncoder":
        """Eval mode, the weight norm folded into a plain positional-conv weight, and the
        filterbank's fixed matrices made persistent graph constants."""
        self.eval()
        if self.pos_conv is not None:
            self.pos_conv.fold()
        if hasattr(self.feature_extractor, "persist_constants"):
            self.feature_extractor.persist_constants()
        return self


def _mask_bias(valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if valid is None:
        return None
    return (~valid)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


def _reduce_valid(valid: torch.Tensor, factor: int, frames: int) -> torch.Tensor:
    # A reduced frame is valid when any of the frames it summarises was valid.
    n = valid.sum(dim=1)
    n = torch.div(n + factor - 1, factor, rounding_mode="floor")
    return torch.arange(frames, device=valid.device)[None, :] < n[:, None]


def build_model(spec: ArchSpec) -> SpeechEncoder:
    """The single builder: every preset, subnet, pruned or imported model goes through here."""
    return SpeechEncoder(spec)


__all__ = ["EncoderOutput", "SpeechEncoder", "build_model"]
