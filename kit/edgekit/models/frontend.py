"""Frontends: raw 16 kHz waveform [B, samples] in, features [B, frames, channels] out."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import FilterbankFrontend, WaveformFrontend


class ConvBlock(nn.Module):
    """Conv1d, optional norm (GroupNorm with one group per channel, or LayerNorm over
    channels), GELU. Key layout matches HuggingFace's `conv_layers.{i}.conv/.layer_norm`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out)
        else:
            self.layer_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class ConvFrontend(nn.Module):
    def __init__(self, spec: WaveformFrontend):
        super().__init__()
        self.spec = spec
        blocks, c_in = [], 1
        for i, layer in enumerate(spec.layers):
            norm = None
            if spec.norm == "layer" or (spec.norm == "group" and i == 0):
                norm = spec.norm
            blocks.append(ConvBlock(c_in, layer.channels, layer.kernel, layer.stride, spec.conv_bias, norm))
            c_in = layer.channels
        self.conv_layers = nn.ModuleList(blocks)
        if spec.channel_scale:
            # Fixed, not trained: it carries pruning-mask values (see WaveformFrontend).
            self.channel_scale = nn.Parameter(torch.ones(c_in), requires_grad=False)
        else:
            self.channel_scale = None

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        x = x.transpose(1, 2)
        if self.channel_scale is not None:
            x = x * self.channel_scale
        return x


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freq: int, n_mels: int, sample_rate: int = 16_000) -> torch.Tensor:
    """HTK-scale triangular filters, [n_freq, n_mels], no area normalisation (as Kaldi)."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_freq, dtype=torch.float64)
    mel_pts = torch.linspace(_hz_to_mel(torch.tensor(0.0)), _hz_to_mel(torch.tensor(sample_rate / 2.0)),
                             n_mels + 2, dtype=torch.float64)
    hz_pts = _mel_to_hz(mel_pts)
    lower, center, upper = hz_pts[:-2], hz_pts[1:-1], hz_pts[2:]
    up = (freqs[:, None] - lower[None]) / (center - lower)[None]
    down = (upper[None] - freqs[:, None]) / (upper - center)[None]
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def dft_basis(n_fft: int, win_length: int) -> torch.Tensor:
    """Hann-windowed real DFT basis as Conv1d weights [2 * n_freq, 1, win_length]:
    the first n_freq rows give the real part, the rest the imaginary part."""
    n_freq = n_fft // 2 + 1
    n = torch.arange(win_length, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / win_length)  # periodic Hann
    k = torch.arange(n_freq, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0) * window[None, :]
    return basis.unsqueeze(1).float()


class FbankFrontend(nn.Module):
    """Log-mel filterbank inside the graph, then a GLU conv subsampler (Fast-HuBERT).

    `mel_mean` / `mel_std` hold the global normalisation statistics of the training data; they
    are buffers so checkpoints carry them and exported graphs fold them as constants.
    """

    def __init__(self, spec: FilterbankFrontend):
        super().__init__()
        self.spec = spec
        self.register_buffer("dft", dft_basis(spec.n_fft, spec.win_length), persistent=False)
        self.register_buffer("mel", mel_filterbank(spec.n_freq, spec.n_mels), persistent=False)
        self.register_buffer("mel_mean", torch.zeros(spec.n_mels))
        self.register_buffer("mel_std", torch.ones(spec.n_mels))
        convs, c_in = [], spec.n_mels
        for layer in spec.subsampler:
            convs.append(nn.Conv1d(c_in, layer.channels, layer.kernel, stride=layer.stride,
                                   padding=layer.kernel // 2))
            c_in = layer.channels // 2
        self.subsampler = nn.ModuleList(convs)

    def persist_constants(self) -> None:
        """Make the DFT basis and mel matrix ordinary (persistent) buffers. ExecuTorch's
        verifier rejects an exported program whose state holds non-persistent buffers, and
        they are constants of the graph anyway; training checkpoints stay without them."""
        for name in ("dft", "mel"):
            value = getattr(self, name)
            delattr(self, name)
            self.register_buffer(name, value, persistent=True)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, samples] -> [B, frames, n_mels]"""
        spec = F.conv1d(wave.unsqueeze(1), self.dft, stride=self.spec.hop_length)
        n_freq = self.spec.n_freq
        power = spec[:, :n_freq] ** 2 + spec[:, n_freq:] ** 2
        mel = torch.matmul(power.transpose(1, 2), self.mel)
        return (torch.log(mel + 1e-6) - self.mel_mean) / self.mel_std

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.log_mel(wave).transpose(1, 2)
        for conv in self.subsampler:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


def build_frontend(spec: WaveformFrontend | FilterbankFrontend) -> nn.Module:
    if isinstance(spec, WaveformFrontend):
        return ConvFrontend(spec)
    return FbankFrontend(spec)
