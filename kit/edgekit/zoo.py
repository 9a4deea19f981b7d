"""Registry of named presets (timm style): `@register_preset`, `list_presets("light*")`,
`get_spec(name)`, `create_model(name)`.

Presets are thin wrappers over ArchSpec; the builder in models/ is the one source of truth for
what a spec becomes. Supernet subnets (lighthubert-*) are registered by supernet.py, which
knows the spaces.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable

from .arch import (ArchSpec, ConvLayer, DistillHeads, FilterbankFrontend, LayerwiseHeads, PosConv,
                   TimeReduction, WaveformFrontend, hubert_frontend, uniform_layers)


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[[], ArchSpec]
    description: str
    tiny: bool = False  # test-sized; not a published model


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, description: str, tiny: bool = False):
    def deco(fn: Callable[[], ArchSpec]) -> Callable[[], ArchSpec]:
        if name in _PRESETS:
            raise RuntimeError(f"internal error: preset {name!r} registered twice")
        _PRESETS[name] = Preset(name, fn, description, tiny)
        return fn
    return deco


class UnknownPresetError(ValueError):
    def __init__(self, name: str):
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(_PRESETS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown preset {name!r}{hint} (`edgekit models` lists them)")


def list_presets(pattern: str = "*", include_tiny: bool = True) -> list[str]:
    _ensure_supernet_presets()
    return sorted(n for n, p in _PRESETS.items()
                  if fnmatch.fnmatch(n, pattern) and (include_tiny or not p.tiny))


def get_preset(name: str) -> Preset:
    _ensure_supernet_presets()
    if name not in _PRESETS:
        raise UnknownPresetError(name)
    return _PRESETS[name]


def get_spec(name: str) -> ArchSpec:
    return get_preset(name).build()


def is_preset(name: str) -> bool:
    _ensure_supernet_presets()
    return name in _PRESETS


def create_model(name: str, seed: int | None = 0):
    """The preset built with random weights (seeded, so two calls give the same model)."""
    import torch

    from .models import build_model

    spec = get_spec(name)
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return build_model(spec).eval()
    return build_model(spec).eval()


def _ensure_supernet_presets() -> None:
    # supernet.py registers the LightHuBERT subnets; importing it here keeps zoo the one
    # place callers go to, without a circular import at module load.
    from . import supernet  # noqa: F401


# --------------------------------------------------------------------------- published models


@register_preset("hubert-base", "HuBERT Base (HuggingFace layout, 94.37M)")
def hubert_base() -> ArchSpec:
    return ArchSpec(frontend=hubert_frontend(), embed_dim=768, layers=uniform_layers(12, 12, 3072),
                    mask_emb=True, name="hubert-base")


@register_preset("wav2vec2-base", "wav2vec 2.0 Base (same backbone as HuBERT Base)")
def wav2vec2_base() -> ArchSpec:
    return hubert_base().replace(name="wav2vec2-base")


@register_preset("distilhubert", "DistilHuBERT: 2 layers distilled from HuBERT Base (23.49M)")
def distilhubert() -> ArchSpec:
    return ArchSpec(frontend=hubert_frontend(), embed_dim=768, layers=uniform_layers(2, 12, 3072),
                    feature_layer_norm=False, name="distilhubert")


@register_preset("distilhubert-heads", "DistilHuBERT with its 3 prediction heads (layers 4, 8, 12)")
def distilhubert_heads() -> ArchSpec:
    return distilhubert().replace(heads=DistillHeads((4, 8, 12), 768), name="distilhubert-heads")


def _fithubert_frontend() -> WaveformFrontend:
    shape = [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(512, 1, 1)] + [(512, 2, 2)] * 2
    return WaveformFrontend(tuple(ConvLayer(c, k, s) for c, k, s in shape), norm="group")


@register_preset("fithubert", "FitHuBERT: thin-deep 12x480 at 25 Hz, counted as published (22.49M)")
def fithubert() -> ArchSpec:
    return ArchSpec(frontend=_fithubert_frontend(), embed_dim=480,
                    layers=uniform_layers(12, 12, 480, head_dim=40),
                    time_reduction=TimeReduction(before_layer=0, factor=2, kernel=2, upsample=True),
                    heads=LayerwiseHeads(layers=(12,), target_dim=768), name="fithubert")


@register_preset("fast-hubert", "Fast-HuBERT: 80-mel filterbank + GLU subsampler, HuBERT Base encoder at 25 Hz")
def fast_hubert() -> ArchSpec:
    return ArchSpec(frontend=FilterbankFrontend(), embed_dim=768, layers=uniform_layers(12, 12, 3072),
                    name="fast-hubert")


# --------------------------------------------------------------------------- tiny test models


def _tiny_frontend(channels: int = 32) -> WaveformFrontend:
    # Same 7-layer shape as HuBERT (so frame counts match real models), few channels.
    return hubert_frontend(channels)


@register_preset("tiny-hubert", "test-sized HuBERT: 32-ch extractor, 2 layers x 32", tiny=True)
def tiny_hubert() -> ArchSpec:
    return ArchSpec(frontend=_tiny_frontend(), embed_dim=32, layers=uniform_layers(2, 2, 64, head_dim=16),
                    pos_conv=PosConv(kernel=16, groups=4), mask_emb=True, name="tiny-hubert")


@register_preset("tiny-distilhubert", "test-sized DistilHuBERT student with 3 heads", tiny=True)
def tiny_distilhubert() -> ArchSpec:
    return tiny_hubert().replace(heads=DistillHeads((1, 2, 2), 32), feature_layer_norm=False,
                                 mask_emb=False, name="tiny-distilhubert")


@register_preset("tiny-fithubert", "test-sized FitHuBERT: time reduction x2, 3 layers x 24", tiny=True)
def tiny_fithubert() -> ArchSpec:
    return ArchSpec(frontend=_tiny_frontend(16), embed_dim=24, layers=uniform_layers(3, 2, 24, head_dim=12),
                    pos_conv=PosConv(kernel=8, groups=4),
                    time_reduction=TimeReduction(before_layer=0, factor=2),
                    heads=LayerwiseHeads(layers=(1, 2, 3), target_dim=32), name="tiny-fithubert")


@register_preset("tiny-fbank", "test-sized Fast-HuBERT: 40-mel filterbank frontend, 2 layers x 32", tiny=True)
def tiny_fbank() -> ArchSpec:
    fe = FilterbankFrontend(n_mels=40, n_fft=512, win_length=400, hop_length=160,
                            subsampler=(ConvLayer(64, 5, 2), ConvLayer(64, 5, 2)))
    return ArchSpec(frontend=fe, embed_dim=32, layers=uniform_layers(2, 2, 64, head_dim=16),
                    pos_conv=PosConv(kernel=16, groups=4), name="tiny-fbank")


@register_preset("tiny-pruned", "test-sized pruned model: uneven heads/FFN, one attention and one FFN removed",
                 tiny=True)
def tiny_pruned() -> ArchSpec:
    from .arch import LayerSpec

    fe = WaveformFrontend(tuple(ConvLayer(c, k, s) for c, (k, s) in
                                zip((24, 20, 28, 16, 32, 12, 32), [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2)))
    layers = (LayerSpec(heads=1, ffn_dim=40, head_dim=16), LayerSpec(heads=0, ffn_dim=24, head_dim=16),
              LayerSpec(heads=2, ffn_dim=0, head_dim=16))
    return ArchSpec(frontend=fe, embed_dim=32, layers=layers, pos_conv=PosConv(kernel=16, groups=4),
                    name="tiny-pruned")
