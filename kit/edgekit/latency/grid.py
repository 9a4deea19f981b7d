"""Profiling grids: which block signatures a table measures, and random held-out models.

A ProfileGrid names the choices of a search space (embed widths, heads, FFN ratios, depths)
plus the pruned widths the predictor must interpolate over (extra head counts and FFN dims,
conv extractor widths, the filterbank frontend). The grid measures every block at a few widths
per dimension, never every architecture: a whole LightHuBERT-Base subnet is 12 layers of
(embed, heads) and (embed, FFN) choices, which the grid covers with a few dozen blocks.

Built-in grids: lighthubert-base, lighthubert-small (the published spaces, models.md) and
tiny (test-sized). A JSON file with the ProfileGrid fields defines another.
"""
from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..arch import (ArchSpec, ConvLayer, FilterbankFrontend, LayerSpec, PosConv, TimeReduction,
                    WaveformFrontend, hubert_frontend)
from ..errors import FormatError, UserError
from .signature import BlockSig, block_signatures

_HUBERT_SHAPE = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2


@dataclass(frozen=True)
class ProfileGrid:
    name: str
    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_ratios: tuple[float, ...]
    depths: tuple[int, ...]
    head_dim: int = 64
    conv_channels: int = 512  # the unpruned extractor width
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    # Pruned widths measured in addition, so the predictor interpolates instead of extrapolating.
    # A small matmul costs far more than its MACs say (a 1-head attention block measured 0.21
    # ms against 0.59 ms for 12 heads, a 96-wide FFN 0.16 ms against 0.48 ms at 2048, ONNX
    # int8): the cost model cannot carry the wide points down there, so the narrow end is
    # measured (1 head, FFN 128) and so are the removed blocks (0 heads, FFN 0).
    extra_heads: tuple[int, ...] = ()
    extra_ffn_dims: tuple[int, ...] = ()
    conv_widths: tuple[int, ...] = ()  # pruned extractor widths (each conv layer, in and out)
    # True: every (c_in, c_out) pair of widths at every conv position (fine for 2 widths).
    # False: every width at every position (c_in = c_out), plus the extreme and neighbouring
    # cross pairs at the first position of each (kernel, stride) kind: linear in the widths,
    # and the predictor's cost model carries c_in != c_out between them.
    conv_all_pairs: bool = True
    # Time-reduction factors (FitHuBERT): the reduction conv, the upsampler and the encoder
    # layers at the reduced frame rate, per embed width.
    time_reductions: tuple[int, ...] = ()
    filterbank: bool = False  # also the Fast-HuBERT filterbank frontend at 25 Hz
    fbank_mels: int = 80
    fbank_channels: int = 1024
    seconds: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        for name in ("embed_dims", "heads", "ffn_ratios", "depths", "extra_heads", "extra_ffn_dims",
                     "conv_widths", "time_reductions", "seconds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("embed_dims", "heads", "ffn_ratios", "depths", "seconds"):
            if not getattr(self, name):
                raise ValueError(f"grid {self.name}: {name} is empty; expected at least one value")
        for e in self.embed_dims:
            if e % self.pos_conv_groups:
                raise ValueError(f"grid {self.name}: embed dim {e} is not divisible by pos_conv_groups "
                                 f"{self.pos_conv_groups}")
        for name in ("embed_dims", "heads", "depths", "conv_widths"):
            if any((not isinstance(v, int)) or v <= 0 for v in getattr(self, name)):
                raise ValueError(f"grid {self.name}: {name} must hold positive integers")
        if any((not isinstance(v, int)) or v < 2 for v in self.time_reductions):
            raise ValueError(f"grid {self.name}: time_reductions must hold integer factors >= 2")
        for name in ("extra_heads", "extra_ffn_dims"):
            # 0 is a pruned-away attention or FFN (its own block, see predict.PRESENCE).
            if any((not isinstance(v, int)) or v < 0 for v in getattr(self, name)):
                raise ValueError(f"grid {self.name}: {name} must hold integers >= 0")
        if any(r <= 0 for r in self.ffn_ratios) or any(s <= 0 for s in self.seconds):
            raise ValueError(f"grid {self.name}: ffn_ratios and seconds must be positive")

    # ---------------------------------------------------------------- choices
    def ffn_dims(self, e: int) -> tuple[int, ...]:
        return tuple(sorted({int(r * e) for r in self.ffn_ratios}))

    def all_heads(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.heads) | set(self.extra_heads)))

    def all_ffn(self, e: int) -> tuple[int, ...]:
        return tuple(sorted(set(self.ffn_dims(e)) | set(self.extra_ffn_dims)))

    def widths(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.conv_widths) | {self.conv_channels}))

    def frontends(self) -> list[WaveformFrontend | FilterbankFrontend]:
        out: list[WaveformFrontend | FilterbankFrontend] = [hubert_frontend(self.conv_channels)]
        if self.filterbank:
            out.append(self.fbank_frontend())
        return out

    def fbank_frontend(self) -> FilterbankFrontend:
        c = self.fbank_channels
        return FilterbankFrontend(n_mels=self.fbank_mels, subsampler=(ConvLayer(c, 5, 2), ConvLayer(c, 5, 2)))

    def _arch(self, frontend, e: int, layers: tuple[LayerSpec, ...], name: str = "",
              time_reduction: int = 1) -> ArchSpec:
        tr = TimeReduction(0, time_reduction, time_reduction, upsample=True) if time_reduction > 1 else None
        return ArchSpec(frontend=frontend, embed_dim=e, layers=layers,
                        pos_conv=PosConv(self.pos_conv_kernel, self.pos_conv_groups, weight_norm=False),
                        time_reduction=tr, name=name)

    def _conv_frontends(self) -> list[WaveformFrontend]:
        """Extractors whose conv blocks cover the pruned widths (see conv_all_pairs)."""
        w = self.widths()
        out = []
        if self.conv_all_pairs:
            for c_first in w:
                for c_rest in w:
                    for c_last in w:
                        out.append([c_first] + [c_rest] * 5 + [c_last])
                        # Alternate widths so every (c_in, c_out) pair appears.
                        out.append([c_first if i % 2 == 0 else c_rest for i in range(7)])
        else:
            out.extend([c] * 7 for c in w)
            # Cross pairs at positions 1 (first k=3) and 5 (first k=2): extremes both ways
            # and each neighbouring pair, upward and downward.
            pairs = {(w[0], w[-1]), (w[-1], w[0])} | {(a, b) for a, b in zip(w, w[1:])} | \
                    {(b, a) for a, b in zip(w, w[1:])}
            for a, b in sorted(pairs):
                out.append([a, b, b, b, b, b, b])
                out.append([a, a, a, a, a, b, b])
        return [WaveformFrontend(tuple(ConvLayer(c, k, s) for c, (k, s) in zip(chans, _HUBERT_SHAPE)))
                for chans in out]

    # ---------------------------------------------------------------- the grid
    def signatures(self) -> list[BlockSig]:
        """Every block the table measures, deduplicated, cheapest kinds first."""
        seen: dict[str, BlockSig] = {}

        def add(sigs: list[BlockSig]) -> None:
            for s in sigs:
                seen.setdefault(s.key, s)

        for seconds in self.seconds:
            for fe in self.frontends():
                for e in self.embed_dims:
                    # One layer per (heads, FFN) pair covers attention x heads and FFN x dims.
                    heads, ffns = self.all_heads(), self.all_ffn(e)
                    if isinstance(fe, FilterbankFrontend):
                        # The 25 Hz encoder only at the widest layer per width: other widths
                        # are interpolated in t from the 50 Hz points (keeps the grid small).
                        heads, ffns = (max(self.heads),), (max(self.ffn_dims(e)),)
                    n_layers = max(len(heads), len(ffns))
                    for i in range(n_layers):
                        layer = LayerSpec(heads[min(i, len(heads) - 1)], ffns[min(i, len(ffns) - 1)],
                                          self.head_dim)
                        add(block_signatures(self._arch(fe, e, (layer,)), seconds))
                        if isinstance(fe, WaveformFrontend) and i in (0, n_layers - 1):
                            # Time reduction: its conv, the upsampler, and the narrowest and
                            # widest layer at the reduced frame rate (others follow in t).
                            for f in self.time_reductions:
                                add(block_signatures(self._arch(fe, e, (layer,), time_reduction=f), seconds))
            # Pruned extractors.
            if len(self.widths()) > 1:
                e = self.embed_dims[0]
                layer = (LayerSpec(self.heads[0], self.ffn_dims(e)[0], self.head_dim),)
                for fe in self._conv_frontends():
                    add(block_signatures(self._arch(fe, e, layer), seconds))
        order = {"norm": 0, "projection": 1, "time_reduction": 2, "upsample": 3, "pos_conv": 4, "attention": 5,
                 "ffn": 6, "conv": 7, "fbank": 8}
        return sorted(seen.values(), key=lambda s: (order[s.kind], s.key))

    # ---------------------------------------------------------------- sampling
    def sample_subnet(self, rng: random.Random) -> ArchSpec:
        """A random subnet of the space (per-layer heads and FFN ratio, LightHuBERT style)."""
        e = rng.choice(self.embed_dims)
        depth = rng.choice(self.depths)
        layers = tuple(LayerSpec(rng.choice(self.heads), int(rng.choice(self.ffn_ratios) * e), self.head_dim)
                       for _ in range(depth))
        return self._arch(hubert_frontend(self.conv_channels), e, layers, name="subnet")

    def sample_pruned(self, rng: random.Random) -> ArchSpec:
        """A random structurally pruned model (DPHuBERT style): arbitrary head counts (some 0),
        FFN widths (some 0) and extractor widths between the grid's extremes, or the filterbank
        frontend when the grid has it."""
        e = rng.choice(self.embed_dims)
        depth = rng.choice(self.depths)
        max_h, max_f = max(self.all_heads()), max(self.all_ffn(e))
        layers = []
        for _ in range(depth):
            h = 0 if rng.random() < 0.1 else rng.randint(1, max_h)
            f = 0 if rng.random() < 0.1 else rng.randint(1, max(1, max_f // 32)) * 32
            layers.append(LayerSpec(h, f, self.head_dim))
        if self.filterbank and rng.random() < 0.25:
            fe: Any = self.fbank_frontend()
        else:
            lo, hi = min(self.widths()), self.conv_channels
            chans = [rng.randint(lo // 8, hi // 8) * 8 for _ in range(7)]
            fe = WaveformFrontend(tuple(ConvLayer(c, k, s) for c, (k, s) in zip(chans, _HUBERT_SHAPE)))
        return self._arch(fe, e, tuple(layers), name="pruned")

    def sample(self, rng: random.Random, pruned_share: float = 0.5) -> ArchSpec:
        return self.sample_pruned(rng) if rng.random() < pruned_share else self.sample_subnet(rng)

    def anchor_models(self, samples: int = 6, seed: int = 99) -> list[ArchSpec]:
        """Whole models the correction is fitted on: the space's smallest, default-like middle
        and largest uniform subnets, and a shallow one, so scale and per-block overhead separate;
        a narrow student when the grid has pruned widths and time reduction; and `samples`
        random subnets and pruned models (a seed apart from validation's). Each anchor is timed
        with the machine's drift in it: five gave scales from 0.98 to 1.17 in three profiles of
        one host, eleven average that down."""
        out = []
        for e, h, r, depth in ((min(self.embed_dims), min(self.heads), min(self.ffn_ratios), max(self.depths)),
                               (max(self.embed_dims), max(self.heads), max(self.ffn_ratios), max(self.depths)),
                               (self.embed_dims[len(self.embed_dims) // 2], self.heads[len(self.heads) // 2],
                                max(self.ffn_ratios), min(self.depths)),
                               (max(self.embed_dims), max(self.heads), max(self.ffn_ratios), 1)):
            layers = tuple(LayerSpec(h, int(r * e), self.head_dim) for _ in range(depth))
            out.append(self._arch(hubert_frontend(self.conv_channels), e, layers, name=f"anchor-{e}x{depth}"))
        if len(self.widths()) > 1 and self.time_reductions:
            # A narrow student (pruned extractor, time reduction): the blocks a tight-budget
            # search picks must be in the correction's range too.
            e, c, f = min(self.embed_dims), min(self.widths()), self.time_reductions[0]
            fe = WaveformFrontend(tuple(ConvLayer(c, k, s) for k, s in _HUBERT_SHAPE))
            layers = tuple(LayerSpec(min(self.heads), int(min(self.ffn_ratios) * e), self.head_dim)
                           for _ in range(min(self.depths)))
            out.append(self._arch(fe, e, layers, name=f"anchor-student-{c}ch-{e}x{len(layers)}-tr{f}",
                                  time_reduction=f))
        rng = random.Random(seed)
        for i in range(samples):
            spec = self.sample(rng)
            out.append(spec.replace(name=f"anchor-{spec.name}-{i}"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


BUILTIN_GRIDS: dict[str, ProfileGrid] = {
    "lighthubert-base": ProfileGrid("lighthubert-base", embed_dims=(512, 640, 768), heads=(8, 10, 12),
                                    ffn_ratios=(3.5, 4.0), depths=(12,), extra_heads=(0, 1, 4),
                                    extra_ffn_dims=(0, 128, 1024), conv_widths=(256,), filterbank=True),
    "lighthubert-small": ProfileGrid("lighthubert-small", embed_dims=(256, 384, 512), heads=(4, 6, 8),
                                     ffn_ratios=(3.0, 3.5, 4.0), depths=(10, 11, 12), extra_heads=(0, 1, 2),
                                     extra_ffn_dims=(0, 128, 512), conv_widths=(256,), filterbank=True),
    # The default for device tables: the LightHuBERT choices plus what the `student` search
    # space varies (narrow embed widths, 4-12 heads, FFN ratio 1-4, conv widths 128-512, the
    # filterbank, time reduction by 2).
    "edge": ProfileGrid("edge", embed_dims=(256, 384, 512, 640, 768), heads=(4, 8, 12), ffn_ratios=(1.0, 2.0, 4.0),
                        depths=(4, 8, 12), extra_heads=(0, 10), extra_ffn_dims=(), conv_widths=(128, 256),
                        conv_all_pairs=False, filterbank=True, time_reductions=(2,)),
    "tiny": ProfileGrid("tiny", embed_dims=(32, 48), heads=(1, 2, 4), ffn_ratios=(1.0, 2.0, 4.0), depths=(2, 3),
                        head_dim=16, conv_channels=32, pos_conv_kernel=16, pos_conv_groups=4,
                        conv_widths=(16,), filterbank=True, fbank_mels=40, fbank_channels=64, seconds=(0.5,)),
}


def get_grid(name_or_path: str) -> ProfileGrid:
    if name_or_path in BUILTIN_GRIDS:
        return BUILTIN_GRIDS[name_or_path]
    p = Path(name_or_path)
    if not p.exists():
        raise UserError(f"--space {name_or_path!r} is neither a built-in grid ({', '.join(BUILTIN_GRIDS)}) "
                        "nor an existing JSON file")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise FormatError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{p}: a grid file must hold one JSON object")
    names = {f.name for f in dataclasses.fields(ProfileGrid)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise FormatError(f"{p}: unknown grid field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    try:
        return ProfileGrid(**data)
    except (TypeError, ValueError) as e:
        raise FormatError(f"{p}: {' '.join(str(e).split())}") from None
