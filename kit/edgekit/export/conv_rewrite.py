"""The waveform conv extractor written as channels-last frame gathers and linear layers.

XNNPACK runs nn.Conv1d as a 2-D convolution in NHWC, so the ExecuTorch graph of a [B, C, T]
extractor carries layout transposes around every conv and norm, and its first conv (one input
channel, kernel 10, stride 5) falls on a slow path. On hubert-base at 1 s the extractor alone
measured 75-79 ms in ExecuTorch against 39-44 ms in ONNX Runtime and 42 ms eager (2 threads);
rewritten as below, 42 ms in ExecuTorch.

An unpadded conv with kernel k and stride s is a matmul over gathered frames: cut the
[B, T, C] signal into chunks of s steps ([B, T/s, s*C], a reshape), put ceil(k/s) neighbouring
chunks side by side (unit-step slices and a concat), keep the first k*C columns and multiply
by the conv weight laid out as [C_out, k*C]. Everything stays in [B, T, C], the layout of the
transformer that follows, and every op is one XNNPACK delegates.
The arithmetic is the same as the conv's up to float summation order (tests check it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.frontend import ConvBlock, ConvFrontend


class FrameLinearConv(nn.Module):
    """Conv1d(c_in, c_out, k, stride=s) on a channels-last [B, T, C] input."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        if conv.groups != 1 or conv.dilation[0] != 1 or conv.padding[0] != 0:
            raise ValueError("FrameLinearConv handles ungrouped, undilated, unpadded convs only")
        self.c_in, self.kernel, self.stride = conv.in_channels, conv.kernel_size[0], conv.stride[0]
        self.chunks = -(-self.kernel // self.stride)
        w = conv.weight.detach().permute(0, 2, 1).reshape(conv.out_channels, self.kernel * self.c_in)
        self.linear = nn.Linear(self.kernel * self.c_in, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(w)
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias.detach())

    def out_frames(self, frames: int) -> int:
        return (frames - self.kernel) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        n = self.out_frames(t)
        need = (n - 1 + self.chunks) * self.stride
        if need > t:
            # Zero frames past the end reach only the unused columns of the last output frame.
            x = F.pad(x, (0, 0, 0, need - t))
        elif need < t:
            x = x[:, :need]
        steps = x.reshape(b, need // self.stride, self.stride * c)
        if self.chunks == 1:
            frames = steps
        else:
            frames = torch.cat([steps[:, r:r + n] for r in range(self.chunks)], dim=-1)
        if frames.shape[-1] != self.kernel * c:
            frames = frames[..., :self.kernel * c]
        return self.linear(frames)


class ChannelsLastGroupNorm(nn.Module):
    """GroupNorm with one group per channel (the extractors' first-layer norm) on [B, T, C]:
    statistics over T as a batched matmul with a constant [1, 1, T] row of 1/T."""

    def __init__(self, gn: nn.GroupNorm, frames: int):
        super().__init__()
        if gn.num_groups != gn.num_channels:
            raise ValueError("ChannelsLastGroupNorm handles one group per channel only")
        self.frames, self.eps = frames, gn.eps
        self.register_buffer("avg", torch.full((1, 1, frames), 1.0 / frames))
        self.weight = nn.Parameter(gn.weight.detach().clone()) if gn.affine else None
        self.bias = nn.Parameter(gn.bias.detach().clone()) if gn.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.frames:
            raise ValueError(f"ChannelsLastGroupNorm built for {self.frames} frames, got {x.shape[1]}; "
                             "re-prepare the model for this window length")
        # One window per call on devices: no expand (a portable-kernel copy in ExecuTorch) for B=1.
        avg = self.avg if x.shape[0] == 1 else self.avg.expand(x.shape[0], 1, self.frames)
        mean = torch.bmm(avg, x)
        d = x - mean
        var = torch.bmm(avg, d * d)
        y = d * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight + self.bias
        return y


class ChannelsLastConvBlock(nn.Module):
    """A ConvBlock (conv, optional norm, GELU) on a channels-last [B, T, C] input of `frames` steps."""

    def __init__(self, block: ConvBlock, frames: int):
        super().__init__()
        self.conv = FrameLinearConv(block.conv)
        self.frames_out = self.conv.out_frames(frames)
        if self.frames_out < 1:
            raise ValueError(f"{frames} input steps are fewer than the conv's kernel ({self.conv.kernel})")
        if block.norm_kind == "group":
            self.norm = ChannelsLastGroupNorm(block.layer_norm, self.frames_out)
        elif block.norm_kind == "layer":
            self.norm = block.layer_norm  # already over the last axis of [B, T, C]
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))


class ChannelsLastConvFrontend(nn.Module):
    """ConvFrontend with the same weights and output, computed in [B, T, C] throughout."""

    def __init__(self, frontend: ConvFrontend, samples: int):
        super().__init__()
        blocks, frames = [], samples
        for block in frontend.conv_layers:
            if frames < block.conv.kernel_size[0]:
                raise ValueError(f"a {samples}-sample window is shorter than the conv extractor's receptive field")
            blocks.append(ChannelsLastConvBlock(block, frames))
            frames = blocks[-1].frames_out
        self.conv_layers = nn.ModuleList(blocks)
        self.channel_scale = frontend.channel_scale

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(-1)
        for block in self.conv_layers:
            x = block(x)
        if self.channel_scale is not None:
            x = x * self.channel_scale
        return x


def rewrite_conv_frontend(module: nn.Module, samples: int) -> int:
    """Replace every ConvFrontend inside `module` with ChannelsLastConvFrontend for a fixed
    window of `samples`; returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, ConvFrontend):
            setattr(module, name, ChannelsLastConvFrontend(child, samples))
            count += 1
        else:
            count += rewrite_conv_frontend(child, samples)
    return count
