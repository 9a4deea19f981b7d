"""ArchSpec: one frozen, JSON-serialisable description of a concrete speech encoder.

Every model edgekit knows (a published preset, a supernet subnet, a pruned model, a distilled
student) is an ArchSpec plus weights. Building, counting, latency prediction and export all take
an ArchSpec, so nothing downstream needs to know where a model came from.

This module imports nothing else of edgekit and no torch: it is pure description and arithmetic.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

SAMPLE_RATE = 16_000
SCHEMA = "edgekit.arch/1"

_EXTRACTOR_NORMS = ("group", "layer", "none")


def _require(cond: bool, field_name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field_name}={value!r} is invalid: {allowed}")


def _positive_int(field_name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             field_name, value, "expected a positive integer")


def _nonneg_int(field_name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
             field_name, value, "expected an integer >= 0")


def conv_out_len(n: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Output length of an unpadded-by-default Conv1d (floor((n + 2p - k) / s) + 1, never < 0)."""
    return max(0, (n + 2 * padding - kernel) // stride + 1)


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class ConvLayer:
    """One Conv1d: output channels, kernel, stride."""

    channels: int
    kernel: int
    stride: int

    def __post_init__(self) -> None:
        _positive_int("conv.channels", self.channels)
        _positive_int("conv.kernel", self.kernel)
        _positive_int("conv.stride", self.stride)


@dataclass(frozen=True)
class WaveformFrontend:
    """The wav2vec 2.0 / HuBERT conv feature extractor (raw waveform in, frames out).

    norm: "group" = GroupNorm(C, C) after the first conv only (Base models); "layer" =
    LayerNorm over channels after every conv (Large models); "none" = no normalisation.
    channel_scale: a fixed per-channel scale on the extractor output. DPHuBERT parks the last
    conv layer's pruning-mask values there (its `dummy_weight`); they sit between a GELU and a
    LayerNorm, so no other weight can absorb them.
    """

    kind: ClassVar[str] = "waveform"
    layers: tuple[ConvLayer, ...]
    norm: str = "group"
    conv_bias: bool = False
    channel_scale: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        _require(len(self.layers) > 0, "frontend.layers", self.layers, "need at least one conv layer")
        for layer in self.layers:
            _require(isinstance(layer, ConvLayer), "frontend.layers", layer, "expected ConvLayer items")
        _require(self.norm in _EXTRACTOR_NORMS, "frontend.norm", self.norm,
                 f"expected one of {', '.join(_EXTRACTOR_NORMS)}")

    @property
    def out_dim(self) -> int:
        return self.layers[-1].channels

    @property
    def stride(self) -> int:
        return math.prod(layer.stride for layer in self.layers)

    def num_frames(self, samples: int) -> int:
        n = samples
        for layer in self.layers:
            n = conv_out_len(n, layer.kernel, layer.stride)
        return n

    def min_samples(self) -> int:
        """Fewest input samples that still give one output frame."""
        n = 1
        for layer in reversed(self.layers):
            n = (n - 1) * layer.stride + layer.kernel
        return n


@dataclass(frozen=True)
class FilterbankFrontend:
    """Log-mel filterbank computed inside the model (Fast-HuBERT), then a conv subsampler.

    The STFT is a strided Conv1d with a fixed, Hann-windowed DFT basis (win_length taps, bins of
    an n_fft-point DFT), then power, a mel matrix, log and a fixed per-mel normalisation: every
    backend exports those ops, unlike torch.stft. Each subsampler conv (padding kernel // 2) is
    followed by a GLU over channels, so its output width is channels / 2.
    """

    kind: ClassVar[str] = "filterbank"
    n_mels: int = 80
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    subsampler: tuple[ConvLayer, ...] = (ConvLayer(1024, 5, 2), ConvLayer(1024, 5, 2))

    def __post_init__(self) -> None:
        object.__setattr__(self, "subsampler", tuple(self.subsampler))
        _positive_int("frontend.n_mels", self.n_mels)
        _positive_int("frontend.n_fft", self.n_fft)
        _positive_int("frontend.win_length", self.win_length)
        _positive_int("frontend.hop_length", self.hop_length)
        _require(self.win_length <= self.n_fft, "frontend.win_length", self.win_length,
                 f"must be <= n_fft ({self.n_fft})")
        _require(self.n_mels <= self.n_fft // 2 + 1, "frontend.n_mels", self.n_mels,
                 f"must be <= n_fft // 2 + 1 ({self.n_fft // 2 + 1})")
        for layer in self.subsampler:
            _require(isinstance(layer, ConvLayer), "frontend.subsampler", layer, "expected ConvLayer items")
            _require(layer.channels % 2 == 0, "frontend.subsampler.channels", layer.channels,
                     "must be even (a GLU halves it)")

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def out_dim(self) -> int:
        return self.subsampler[-1].channels // 2 if self.subsampler else self.n_mels

    @property
    def stride(self) -> int:
        return self.hop_length * math.prod(layer.stride for layer in self.subsampler)

    def num_fbank_frames(self, samples: int) -> int:
        return conv_out_len(samples, self.win_length, self.hop_length)

    def num_frames(self, samples: int) -> int:
        n = self.num_fbank_frames(samples)
        for layer in self.subsampler:
            n = conv_out_len(n, layer.kernel, layer.stride, layer.kernel // 2)
        return n

    def min_samples(self) -> int:
        return self.win_length


Frontend = Union[WaveformFrontend, FilterbankFrontend]


@dataclass(frozen=True)
class PosConv:
    """Convolutional positional embedding: Conv1d(E, E, kernel, padding kernel//2, groups).

    weight_norm: the weight is parametrised as g * v / ||v|| (norm per kernel tap, dim=2) as
    in the released checkpoints; extracted subnets and exported models carry a folded plain
    weight instead.
    """

    kernel: int = 128
    groups: int = 16
    weight_norm: bool = True

    def __post_init__(self) -> None:
        _positive_int("pos_conv.kernel", self.kernel)
        _positive_int("pos_conv.groups", self.groups)


@dataclass(frozen=True)
class LayerSpec:
    """One transformer layer. heads == 0 means the attention block is pruned away;
    ffn_dim == 0 means the feed-forward block is pruned away (the LayerNorms stay)."""

    heads: int
    ffn_dim: int
    head_dim: int = 64

    def __post_init__(self) -> None:
        _nonneg_int("layer.heads", self.heads)
        _nonneg_int("layer.ffn_dim", self.ffn_dim)
        _positive_int("layer.head_dim", self.head_dim)

    @property
    def attention_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def has_attention(self) -> bool:
        return self.heads > 0

    @property
    def has_ffn(self) -> bool:
        return self.ffn_dim > 0


@dataclass(frozen=True)
class TimeReduction:
    """Conv1d(E, E, kernel, stride=factor) before layer `before_layer` (0-based), after the
    positional embedding and its LayerNorm (FitHuBERT). The sequence is zero-padded to a
    multiple of the factor first. upsample: a ConvTranspose1d(E, E, factor, factor) brings the
    last hidden state back to the frontend frame rate (cropped to the frontend's frame count)."""

    before_layer: int = 0
    factor: int = 2
    kernel: int = 2
    upsample: bool = True

    def __post_init__(self) -> None:
        _nonneg_int("time_reduction.before_layer", self.before_layer)
        _positive_int("time_reduction.factor", self.factor)
        _require(self.factor >= 2, "time_reduction.factor", self.factor, "expected >= 2")
        _positive_int("time_reduction.kernel", self.kernel)


@dataclass(frozen=True)
class DistillHeads:
    """DistilHuBERT prediction heads: Linear(E, inter*N), GELU, then one Linear(inter, target_dim)
    per target teacher layer. targets are 1-based teacher layer indices."""

    kind: ClassVar[str] = "distilhubert"
    targets: tuple[int, ...] = (4, 8, 12)
    target_dim: int = 768
    inter_dim: int = 0  # 0: the encoder width

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        _require(len(self.targets) > 0, "heads.targets", self.targets, "need at least one target layer")
        for t in self.targets:
            _nonneg_int("heads.targets", t)
        _positive_int("heads.target_dim", self.target_dim)
        _nonneg_int("heads.inter_dim", self.inter_dim)


@dataclass(frozen=True)
class LayerwiseHeads:
    """FitHuBERT per-layer heads: for each listed student layer (1-based), an optional
    ConvTranspose1d upsampler (when the model has time reduction) and Linear(E, target_dim)."""

    kind: ClassVar[str] = "layerwise"
    layers: tuple[int, ...] = (12,)
    target_dim: int = 768

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        _require(len(self.layers) > 0, "heads.layers", self.layers, "need at least one layer")
        for layer in self.layers:
            _positive_int("heads.layers", layer)
        _positive_int("heads.target_dim", self.target_dim)


Heads = Union[DistillHeads, LayerwiseHeads]


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ArchSpec:
    frontend: Frontend
    embed_dim: int
    layers: tuple[LayerSpec, ...]
    feature_layer_norm: bool = True
    pos_conv: PosConv | None = field(default_factory=PosConv)
    layer_norm_first: bool = False
    time_reduction: TimeReduction | None = None
    heads: Heads | None = None
    mask_emb: bool = False  # the pretraining mask embedding (kept so checkpoints load strictly)
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        _require(isinstance(self.frontend, (WaveformFrontend, FilterbankFrontend)), "frontend",
                 self.frontend, "expected WaveformFrontend or FilterbankFrontend")
        _positive_int("embed_dim", self.embed_dim)
        _require(len(self.layers) > 0, "layers", self.layers, "need at least one encoder layer")
        for i, layer in enumerate(self.layers):
            _require(isinstance(layer, LayerSpec), f"layers[{i}]", layer, "expected LayerSpec")
        if self.pos_conv is not None:
            g = self.pos_conv.groups
            _require(self.embed_dim % g == 0, "pos_conv.groups", g,
                     f"must divide embed_dim ({self.embed_dim})")
        if self.time_reduction is not None:
            _require(self.time_reduction.before_layer < len(self.layers), "time_reduction.before_layer",
                     self.time_reduction.before_layer, f"must be < number of layers ({len(self.layers)})")
        if isinstance(self.heads, LayerwiseHeads):
            for layer in self.heads.layers:
                _require(layer <= len(self.layers), "heads.layers", layer,
                         f"must be <= number of layers ({len(self.layers)})")

    # ----------------------------------------------------------------- shape facts
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def num_frames(self, samples: int) -> int:
        """Frames out of the frontend (the rate of last_hidden_state)."""
        return self.frontend.num_frames(samples)

    def layer_frames(self, samples: int) -> list[int]:
        """Sequence length seen by each encoder layer."""
        t = self.num_frames(samples)
        out = []
        tr = self.time_reduction
        for i in range(self.num_layers):
            if tr is not None and i == tr.before_layer:
                t = conv_out_len(math.ceil(t / tr.factor) * tr.factor, tr.kernel, tr.factor)
            out.append(t)
        return out

    def output_frames(self, samples: int) -> int:
        t_in = self.num_frames(samples)
        if self.time_reduction is not None and self.time_reduction.upsample:
            return t_in
        return self.layer_frames(samples)[-1]

    def frame_rate_hz(self) -> float:
        stride = self.frontend.stride
        if self.time_reduction is not None and not self.time_reduction.upsample:
            stride *= self.time_reduction.factor
        return SAMPLE_RATE / stride

    # ----------------------------------------------------------------- edits
    def replace(self, **changes: Any) -> "ArchSpec":
        return dataclasses.replace(self, **changes)

    def without_heads(self) -> "ArchSpec":
        return self.replace(heads=None)

    def summary(self) -> str:
        fe = self.frontend
        if isinstance(fe, WaveformFrontend):
            chans = sorted({c.channels for c in fe.layers})
            front = f"waveform conv x{len(fe.layers)} ({'/'.join(map(str, chans))} ch, {fe.norm} norm)"
        else:
            front = f"filterbank {fe.n_mels} mels + {len(fe.subsampler)} conv subsampler"
        heads = sorted({layer.heads for layer in self.layers})
        ffns = sorted({layer.ffn_dim for layer in self.layers})
        rng = lambda v: str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"  # noqa: E731
        parts = [front, f"{self.num_layers} layers x {self.embed_dim}", f"heads {rng(heads)}",
                 f"ffn {rng(ffns)}"]
        if self.time_reduction is not None:
            parts.append(f"time reduction x{self.time_reduction.factor}")
        return ", ".join(parts)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **_to_jsonable(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "ArchSpec":
        if not isinstance(data, dict):
            raise ValueError(f"an ArchSpec must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        schema = data.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise ValueError(f"schema={schema!r} is not supported: expected {SCHEMA!r}")
        return _from_jsonable(cls, data, "arch")

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        return cls.from_dict(data)

    # ----------------------------------------------------------------- counting
    def param_count(self, include_heads: bool = True) -> int:
        return sum(b.params for b in blocks(self, 1.0) if include_heads or not b.training_only)

    def mac_count(self, seconds: float, include_heads: bool = False) -> int:
        return sum(b.macs for b in blocks(self, seconds) if include_heads or not b.training_only)


# --------------------------------------------------------------------------- JSON helpers

_TAGGED = {
    "frontend": {"waveform": WaveformFrontend, "filterbank": FilterbankFrontend},
    "heads": {"distilhubert": DistillHeads, "layerwise": LayerwiseHeads},
}
_NESTED = {"pos_conv": PosConv, "time_reduction": TimeReduction}
# List fields whose items are dataclasses; every other list field holds plain integers.
_ITEMS: dict[tuple[str, str], type] = {
    ("ArchSpec", "layers"): LayerSpec,
    ("WaveformFrontend", "layers"): ConvLayer,
    ("FilterbankFrontend", "subsampler"): ConvLayer,
}


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out: dict[str, Any] = {}
        kind = getattr(type(obj), "kind", None)
        if kind is not None:
            out["type"] = kind
        for f in dataclasses.fields(obj):
            out[f.name] = _to_jsonable(getattr(obj, f.name))
        return out
    if isinstance(obj, tuple):
        return [_to_jsonable(x) for x in obj]
    return obj


def _from_jsonable(cls: type, data: dict, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names) - {"type"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type":
            continue
        path = f"{where}.{key}"
        if value is None:
            kwargs[key] = None
        elif cls is ArchSpec and key in _TAGGED:
            tag = value.get("type") if isinstance(value, dict) else None
            options = _TAGGED[key]
            if tag not in options:
                raise ValueError(f"{path}.type={tag!r} is invalid: expected one of {', '.join(options)}")
            kwargs[key] = _from_jsonable(options[tag], value, path)
        elif cls is ArchSpec and key in _NESTED:
            kwargs[key] = _from_jsonable(_NESTED[key], value, path)
        elif isinstance(value, list):
            item_cls = _ITEMS.get((cls.__name__, key))
            if item_cls is None:
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = tuple(_from_jsonable(item_cls, v, f"{path}[{i}]") for i, v in enumerate(value))
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class Block:
    """One countable block: name, kind (for latency tables), parameters, MACs, frames."""

    name: str
    kind: str
    params: int
    macs: int
    frames: int
    training_only: bool = False


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _layer_norm(d: int) -> int:
    return 2 * d


def blocks(spec: ArchSpec, seconds: float) -> list[Block]:
    """Parameters and multiply-accumulates of every block for `seconds` of 16 kHz input.

    MACs count the matrix work (convolutions, linears, attention's T^2 terms); norms,
    activations and softmax are elementwise and not counted.
    """
    samples = int(round(seconds * SAMPLE_RATE))
    out: list[Block] = []
    fe = spec.frontend
    if isinstance(fe, WaveformFrontend):
        n, c_in = samples, 1
        for i, layer in enumerate(fe.layers):
            n = conv_out_len(n, layer.kernel, layer.stride)
            p = c_in * layer.channels * layer.kernel + (layer.channels if fe.conv_bias else 0)
            if (fe.norm == "group" and i == 0) or fe.norm == "layer":
                p += 2 * layer.channels
            if fe.channel_scale and i == len(fe.layers) - 1:
                p += layer.channels
            out.append(Block(f"frontend.conv{i}", "conv", p, n * c_in * layer.channels * layer.kernel, n))
            c_in = layer.channels
    else:
        n = fe.num_fbank_frames(samples)
        # The DFT basis, mel matrix and normalisation statistics are fixed buffers: 0 parameters.
        stft = n * 2 * fe.n_freq * fe.win_length + n * fe.n_freq * fe.n_mels
        out.append(Block("frontend.fbank", "fbank", 0, stft, n))
        c_in = fe.n_mels
        for i, layer in enumerate(fe.subsampler):
            n = conv_out_len(n, layer.kernel, layer.stride, layer.kernel // 2)
            p = c_in * layer.channels * layer.kernel + layer.channels
            out.append(Block(f"frontend.subsample{i}", "conv", p, n * c_in * layer.channels * layer.kernel, n))
            c_in = layer.channels // 2
    t = n
    d_in, e = fe.out_dim, spec.embed_dim
    proj_p = _linear(d_in, e) + (_layer_norm(d_in) if spec.feature_layer_norm else 0)
    proj_p += e if spec.mask_emb else 0
    out.append(Block("projection", "projection", proj_p, t * d_in * e, t))
    if spec.pos_conv is not None:
        pc = spec.pos_conv
        w = e * (e // pc.groups) * pc.kernel
        p = w + e + (pc.kernel if pc.weight_norm else 0)
        # Output length with padding k//2 is t + 1 for an even kernel; the extra frame is dropped.
        out.append(Block("pos_conv", "pos_conv", p + _layer_norm(e), t * w, t))
    else:
        out.append(Block("encoder_norm", "norm", _layer_norm(e), 0, t))
    tr = spec.time_reduction
    frames = spec.layer_frames(samples)
    for i, layer in enumerate(spec.layers):
        if tr is not None and i == tr.before_layer:
            t_red = frames[i]
            out.append(Block("time_reduction", "time_reduction", e * e * tr.kernel + e,
                             t_red * e * e * tr.kernel, t_red))
        t = frames[i]
        a, f = layer.attention_dim, layer.ffn_dim
        attn_p = (4 * e * a + 3 * a + e) if a else 0
        attn_m = (4 * t * e * a + 2 * t * t * a) if a else 0
        ffn_p = (2 * e * f + f + e) if f else 0
        out.append(Block(f"layer{i}.attention", "attention", attn_p + _layer_norm(e), attn_m, t))
        out.append(Block(f"layer{i}.ffn", "ffn", ffn_p + _layer_norm(e), 2 * t * e * f, t))
    if tr is not None and tr.upsample:
        out.append(Block("upsample", "upsample", e * e * tr.factor + e, t * e * e * tr.factor,
                         spec.num_frames(samples)))
    out.extend(_head_blocks(spec, samples))
    return out


def _head_blocks(spec: ArchSpec, samples: int) -> list[Block]:
    heads, e = spec.heads, spec.embed_dim
    if heads is None:
        return []
    t_out = spec.output_frames(samples)
    if isinstance(heads, DistillHeads):
        inter = heads.inter_dim or e
        n = len(heads.targets)
        p = _linear(e, inter * n) + n * _linear(inter, heads.target_dim)
        m = t_out * (e * inter * n + n * inter * heads.target_dim)
        return [Block("heads", "heads", p, m, t_out, training_only=True)]
    tr = spec.time_reduction
    frames = spec.layer_frames(samples)
    out = []
    for layer in heads.layers:
        t = frames[layer - 1]
        p, m = _linear(e, heads.target_dim), t * e * heads.target_dim
        if tr is not None:
            p += e * e * tr.factor + e
            m = t * e * e * tr.factor + t * tr.factor * e * heads.target_dim
        out.append(Block(f"heads.layer{layer}", "heads", p, m, t, training_only=True))
    return out


def block_table(spec: ArchSpec, seconds: float) -> list[dict]:
    return [dataclasses.asdict(b) for b in blocks(spec, seconds)]


# --------------------------------------------------------------------------- builders


def hubert_frontend(channels: int = 512, norm: str = "group") -> WaveformFrontend:
    """The 7-layer HuBERT/wav2vec 2.0 extractor (320x down-sampling, 400-sample receptive field)."""
    shape = [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2
    return WaveformFrontend(tuple(ConvLayer(channels, k, s) for k, s in shape), norm=norm)


def uniform_layers(n: int, heads: int, ffn_dim: int, head_dim: int = 64) -> tuple[LayerSpec, ...]:
    return tuple(LayerSpec(heads=heads, ffn_dim=ffn_dim, head_dim=head_dim) for _ in range(n))
