"""HardConcrete (L0) gates (Louizos et al. 2018), as used by HJ-Pruning and DPHuBERT.

In training a gate is a stretched, clamped concrete sample: exactly 0 or 1 with positive
probability, differentiable in log_alpha in between. `prob_nonzero` is the probability that a
gate is not exactly 0, so the expected number of kept units is its sum. After training the
gates are made hard: the `round(expected kept)` units with the largest log_alpha are kept (as
DPHuBERT does at evaluation), so the hard model's size tracks the expected size.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class HardConcrete(nn.Module):
    def __init__(self, n: int, init_keep: float = 0.99, temperature: float = 2.0 / 3.0,
                 stretch: tuple[float, float] = (-0.1, 1.1), min_keep: int = 0):
        super().__init__()
        if n <= 0:
            raise ValueError(f"gate count {n} is invalid: expected > 0")
        if not 0.0 < init_keep < 1.0:
            raise ValueError(f"init_keep={init_keep} is invalid: expected 0 < p < 1")
        lo, hi = stretch
        if not (lo < 0.0 and hi > 1.0):
            raise ValueError(f"stretch={stretch} is invalid: expected lo < 0 and hi > 1")
        if not 0 <= min_keep <= n:
            raise ValueError(f"min_keep={min_keep} is invalid: expected 0..{n}")
        self.n, self.beta, self.lo, self.hi, self.min_keep = n, temperature, lo, hi, min_keep
        self.log_alpha = nn.Parameter(torch.full((n,), math.log(init_keep / (1.0 - init_keep))))
        # log(-lo/hi): the shift that turns log_alpha into the logit of P(gate != 0).
        self._shift = temperature * math.log(-lo / hi)

    def prob_nonzero(self) -> torch.Tensor:
        """[n] P(gate > 0), differentiable."""
        return torch.sigmoid(self.log_alpha - self._shift)

    def expected_kept(self) -> torch.Tensor:
        return self.prob_nonzero().sum()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n] a stretched, clamped concrete sample in [0, 1] (training)."""
        eps = 1e-6
        u = torch.rand(self.n, generator=generator).to(self.log_alpha.device).clamp(eps, 1 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.hi - self.lo) + self.lo).clamp(0.0, 1.0)

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """[n] float 0/1: the round(expected kept) units with the largest log_alpha, at least min_keep."""
        k = int(round(float(self.expected_kept())))
        k = max(self.min_keep, min(self.n, k))
        mask = torch.zeros(self.n, device=self.log_alpha.device)
        if k:
            mask[torch.topk(self.log_alpha, k).indices] = 1.0
        return mask

    def forward(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.sample(generator) if self.training else self.hard_mask()

    def extra_repr(self) -> str:
        return f"n={self.n}, temperature={self.beta:.3f}, stretch=({self.lo}, {self.hi}), min_keep={self.min_keep}"
