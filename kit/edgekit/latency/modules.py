"""Standalone nn.Modules for block signatures, built from the same classes as the model.

Each block module takes one float tensor and returns one (the export contract), so it is
exported and timed exactly like a whole model. The residual adds and LayerNorms that belong to
a block in SpeechEncoder.forward are inside it, so a sum of blocks runs the same ops as the
model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import PosConv, TimeReduction
from ..models.encoder import FeedForward, PositionalConv, SelfAttention, TimeReductionConv, Upsampler
from ..models.frontend import ConvBlock, FbankFrontend
from .signature import BlockSig

_NORM_NAMES = {0: None, 1: "group", 2: "layer"}


class _Conv(nn.Module):
    """[1, cin, n] -> [1, cout(/2 with GLU), n_out]: a waveform ConvBlock or a GLU subsampler conv."""

    def __init__(self, d: dict[str, int]):
        super().__init__()
        self.glu = bool(d["glu"])
        if self.glu:
            self.conv = nn.Conv1d(d["cin"], d["cout"], d["k"], stride=d["s"], padding=d["pad"], bias=bool(d["bias"]))
        else:
            self.conv = ConvBlock(d["cin"], d["cout"], d["k"], d["s"], bool(d["bias"]), _NORM_NAMES[d["norm"]])
        self.frames_in = d["n"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.conv(x), dim=1) if self.glu else self.conv(x)

    def channels_last(self) -> nn.Module | None:
        """The form the ExecuTorch export gives a waveform conv (see export/conv_rewrite.py),
        taking [1, n, cin]; None for a GLU subsampler conv, which the export leaves as it is."""
        from ..export.conv_rewrite import ChannelsLastConvBlock

        if self.glu:
            return None
        return ChannelsLastConvBlock(self.conv, self.frames_in)


class _Fbank(nn.Module):
    """[1, samples] -> [1, frames, mels] log-mel features (the subsampler is separate blocks)."""

    def __init__(self, d: dict[str, int]):
        super().__init__()
        from ..arch import FilterbankFrontend

        self.fbank = FbankFrontend(FilterbankFrontend(n_mels=d["mels"], n_fft=d["nfft"], win_length=d["win"],
                                                      hop_length=d["hop"], subsampler=()))
        # As SpeechEncoder.prepare_for_export does: ExecuTorch refuses non-persistent buffers.
        self.fbank.persist_constants()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.fbank.log_mel(wave)


class _Projection(nn.Module):
    def __init__(self, d: dict[str, int]):
        super().__init__()
        self.norm = nn.LayerNorm(d["din"]) if d["ln"] else None
        self.proj = nn.Linear(d["din"], d["e"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x) if self.norm is not None else x)


class _PosConv(nn.Module):
    def __init__(self, d: dict[str, int]):
        super().__init__()
        self.pos = PositionalConv(d["e"], PosConv(kernel=d["k"], groups=d["g"], weight_norm=False))
        self.norm = nn.LayerNorm(d["e"]) if d["ln"] else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        return self.norm(x) if self.norm is not None else x


class _Residual(nn.Module):
    """One half of an encoder layer: post-LN = LN(x + f(x)); pre-LN = x + f(LN(x));
    f absent (pruned) = LN(x) in post-LN."""

    def __init__(self, e: int, inner: nn.Module | None, pre: bool):
        super().__init__()
        self.inner, self.pre = inner, pre
        self.norm = nn.LayerNorm(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:
            return x + self.inner(self.norm(x)) if self.inner is not None else x
        return self.norm(x + self.inner(x)) if self.inner is not None else self.norm(x)


class _Upsample(nn.Module):
    def __init__(self, d: dict[str, int]):
        super().__init__()
        self.up = Upsampler(d["e"], d["f"])
        self.frames = d["frames"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x, self.frames)


def build_block_module(sig: BlockSig, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(eval module, example input) for one block; random weights, seeded."""
    d = sig.as_dict()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if sig.kind == "conv":
            m, x = _Conv(d), torch.randn(1, d["cin"], d["n"])
        elif sig.kind == "fbank":
            m, x = _Fbank(d), torch.randn(1, d["samples"]) * 0.1
        elif sig.kind == "projection":
            m, x = _Projection(d), torch.randn(1, d["t"], d["din"])
        elif sig.kind == "pos_conv":
            m, x = _PosConv(d), torch.randn(1, d["t"], d["e"])
        elif sig.kind == "norm":
            m, x = nn.Sequential(nn.LayerNorm(d["e"])), torch.randn(1, d["t"], d["e"])
        elif sig.kind == "attention":
            inner = SelfAttention(d["e"], d["h"], d["hd"]) if d["h"] else None
            m, x = _Residual(d["e"], inner, bool(d["pre"])), torch.randn(1, d["t"], d["e"])
        elif sig.kind == "ffn":
            inner = FeedForward(d["e"], d["f"]) if d["f"] else None
            m, x = _Residual(d["e"], inner, bool(d["pre"])), torch.randn(1, d["t"], d["e"])
        elif sig.kind == "time_reduction":
            m = TimeReductionConv(d["e"], TimeReduction(factor=d["f"], kernel=d["k"]))
            x = torch.randn(1, d["t"], d["e"])
        elif sig.kind == "upsample":
            m, x = _Upsample(d), torch.randn(1, d["t"], d["e"])
        else:
            raise RuntimeError(f"internal error: no module for block kind {sig.kind!r}")
    return m.eval(), x

