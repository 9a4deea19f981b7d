"""Block signatures: the unit a latency table is keyed by.

An ArchSpec's forward pass is cut into blocks that run one after another (frontend convs or
filterbank, projection, positional conv, per layer an attention part and an FFN part, time
reduction, upsampler). Two blocks with the same signature cost the same on a device whatever
model they sit in, so a table measured once serves every model of a space, pruned ones
included. The key is a readable string, `kind:name=value,...`, with integer dimensions only,
so tables stay plain JSON and keys can be parsed back into the dimensions the predictor's
interpolation works on.

This module is pure arithmetic (no torch): the search calls it thousands of times a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..arch import SAMPLE_RATE, ArchSpec, FilterbankFrontend, WaveformFrontend, conv_out_len

# Order of dimensions per kind; a key must hold exactly these.
KIND_DIMS: dict[str, tuple[str, ...]] = {
    # norm: 0 none, 1 GroupNorm(C, C), 2 LayerNorm over channels; glu: GLU halves the output
    "conv": ("cin", "cout", "k", "s", "pad", "n", "norm", "bias", "glu"),
    "fbank": ("nfft", "win", "hop", "mels", "samples"),
    "projection": ("din", "e", "ln", "t"),
    "pos_conv": ("e", "k", "g", "t", "ln"),
    "norm": ("e", "t"),
    "attention": ("e", "h", "hd", "t", "pre"),
    "ffn": ("e", "f", "t", "pre"),
    "time_reduction": ("e", "k", "f", "t"),
    "upsample": ("e", "f", "t", "frames"),
}
NORM_CODES = {"none": 0, "group": 1, "layer": 2}


@dataclass(frozen=True)
class BlockSig:
    """One block of a model: its name in the model (as arch.blocks names it), kind and dims."""

    name: str
    kind: str
    dims: tuple[int, ...]

    @cached_property
    def key(self) -> str:
        names = KIND_DIMS[self.kind]
        return f"{self.kind}:" + ",".join(f"{n}={v}" for n, v in zip(names, self.dims))

    def dim(self, name: str) -> int:
        return self.dims[KIND_DIMS[self.kind].index(name)]

    def as_dict(self) -> dict[str, int]:
        return dict(zip(KIND_DIMS[self.kind], self.dims))


def make(name: str, kind: str, **dims: int) -> BlockSig:
    names = KIND_DIMS[kind]
    if set(dims) != set(names):
        raise RuntimeError(f"internal error: {kind} block needs dims {names}, got {sorted(dims)}")
    return BlockSig(name, kind, tuple(int(dims[n]) for n in names))


def parse_key(key: str) -> tuple[str, dict[str, int]]:
    """'ffn:e=768,f=3072,t=49,pre=0' -> ('ffn', {...}); ValueError with the reason otherwise."""
    kind, sep, rest = key.partition(":")
    if not sep or kind not in KIND_DIMS:
        raise ValueError(f"block key {key!r}: unknown kind {kind!r}; expected one of {', '.join(KIND_DIMS)}")
    dims: dict[str, int] = {}
    for part in rest.split(","):
        name, eq, value = part.partition("=")
        if not eq or not value.lstrip("-").isdigit():
            raise ValueError(f"block key {key!r}: {part!r} is not name=integer")
        dims[name] = int(value)
    if tuple(dims) != KIND_DIMS[kind]:
        raise ValueError(f"block key {key!r}: dims {list(dims)} do not match {list(KIND_DIMS[kind])}")
    return kind, dims


def block_signatures(spec: ArchSpec, seconds: float) -> list[BlockSig]:
    """The blocks SpeechEncoder.forward runs, in order, for `seconds` of 16 kHz audio (no
    training heads: they are dropped before export)."""
    samples = int(round(seconds * SAMPLE_RATE))
    out: list[BlockSig] = []
    fe = spec.frontend
    if isinstance(fe, WaveformFrontend):
        n, c_in = samples, 1
        for i, layer in enumerate(fe.layers):
            norm = fe.norm if (fe.norm == "layer" or (fe.norm == "group" and i == 0)) else "none"
            out.append(make(f"frontend.conv{i}", "conv", cin=c_in, cout=layer.channels, k=layer.kernel,
                            s=layer.stride, pad=0, n=n, norm=NORM_CODES[norm], bias=int(fe.conv_bias), glu=0))
            n = conv_out_len(n, layer.kernel, layer.stride)
            c_in = layer.channels
    else:
        assert isinstance(fe, FilterbankFrontend)
        out.append(make("frontend.fbank", "fbank", nfft=fe.n_fft, win=fe.win_length, hop=fe.hop_length,
                        mels=fe.n_mels, samples=samples))
        n, c_in = fe.num_fbank_frames(samples), fe.n_mels
        for i, layer in enumerate(fe.subsampler):
            pad = layer.kernel // 2
            out.append(make(f"frontend.subsample{i}", "conv", cin=c_in, cout=layer.channels, k=layer.kernel,
                            s=layer.stride, pad=pad, n=n, norm=0, bias=1, glu=1))
            n = conv_out_len(n, layer.kernel, layer.stride, pad)
            c_in = layer.channels // 2
    t0 = n
    e = spec.embed_dim
    post = 0 if spec.layer_norm_first else 1
    out.append(make("projection", "projection", din=fe.out_dim, e=e, ln=int(spec.feature_layer_norm), t=t0))
    if spec.pos_conv is not None:
        pc = spec.pos_conv
        out.append(make("pos_conv", "pos_conv", e=e, k=pc.kernel, g=pc.groups, t=t0, ln=post))
    elif post:
        out.append(make("encoder_norm", "norm", e=e, t=t0))
    tr = spec.time_reduction
    frames = spec.layer_frames(samples)
    t_prev = t0
    for i, layer in enumerate(spec.layers):
        if tr is not None and i == tr.before_layer:
            out.append(make("time_reduction", "time_reduction", e=e, k=tr.kernel, f=tr.factor, t=t_prev))
        t = frames[i]
        # A pruned-away block still costs its LayerNorm in post-LN models; in pre-LN models
        # nothing of it runs.
        if layer.has_attention or post:
            out.append(make(f"layer{i}.attention", "attention", e=e, h=layer.heads, hd=layer.head_dim,
                            t=t, pre=1 - post))
        if layer.has_ffn or post:
            out.append(make(f"layer{i}.ffn", "ffn", e=e, f=layer.ffn_dim, t=t, pre=1 - post))
        t_prev = t
    if not post:
        out.append(make("encoder_norm", "norm", e=e, t=t_prev))
    if tr is not None and tr.upsample:
        out.append(make("upsample", "upsample", e=e, f=tr.factor, t=t_prev, frames=t0))
    return out


# --------------------------------------------------------------------------- cost features


def features(kind: str, d: dict[str, int]) -> list[float]:
    """Cost features of one block, constant term first, most important next: the predictor
    fits latency as a non-negative mix of these (matrix work, then element-wise traffic),
    using fewer of them when a kind has few measured points."""
    if kind == "conv":
        n_out = conv_out_len(d["n"], d["k"], d["s"], d["pad"])
        return [1.0, n_out * d["cin"] * d["cout"] * d["k"], n_out * d["cout"], d["n"] * d["cin"]]
    if kind == "fbank":
        n = conv_out_len(d["samples"], d["win"], d["hop"])
        nf = d["nfft"] // 2 + 1
        return [1.0, n * 2 * nf * d["win"] + n * nf * d["mels"], n * nf]
    if kind == "projection":
        return [1.0, d["t"] * d["din"] * d["e"], d["t"] * (d["din"] + d["e"])]
    if kind == "pos_conv":
        return [1.0, d["t"] * d["e"] * (d["e"] // d["g"]) * d["k"], d["t"] * d["e"]]
    if kind == "norm":
        return [1.0, d["t"] * d["e"]]
    if kind == "attention":
        a, t = d["h"] * d["hd"], d["t"]
        return [1.0, 4 * t * d["e"] * a, 2 * t * t * a, t * d["e"] + d["h"] * t * t]
    if kind == "ffn":
        return [1.0, 2 * d["t"] * d["e"] * d["f"], d["t"] * d["f"], d["t"] * d["e"]]
    if kind == "time_reduction":
        t_out = -(-d["t"] // d["f"])
        return [1.0, t_out * d["e"] * d["e"] * d["k"], d["t"] * d["e"]]
    if kind == "upsample":
        return [1.0, d["t"] * d["e"] * d["e"] * d["f"], d["frames"] * d["e"]]
    raise RuntimeError(f"internal error: no features for block kind {kind!r}")


def macs(kind: str, d: dict[str, int]) -> float:
    """Multiply-accumulates of a block (the matrix work the device model scales by compute)."""
    f = features(kind, d)
    total = f[1] if kind != "norm" else 0.0
    if kind == "attention":
        total += f[2]
    return float(total)


def traffic_bytes(kind: str, d: dict[str, int], dtype: str) -> float:
    """Rough bytes a block moves: weights once plus activations in and out (4 bytes fp32, 1
    byte for int8 weights; activations stay fp32 between delegated partitions)."""
    wbytes = 1 if dtype == "int8" else 4
    if kind == "conv":
        n_out = conv_out_len(d["n"], d["k"], d["s"], d["pad"])
        w = d["cin"] * d["cout"] * d["k"]
        act = d["n"] * d["cin"] + n_out * d["cout"]
    elif kind == "fbank":
        w, act = 0, d["samples"] + conv_out_len(d["samples"], d["win"], d["hop"]) * d["mels"]
    elif kind == "projection":
        w, act = d["din"] * d["e"], d["t"] * (d["din"] + d["e"])
    elif kind == "pos_conv":
        w, act = d["e"] * (d["e"] // d["g"]) * d["k"], 2 * d["t"] * d["e"]
    elif kind == "norm":
        w, act = 0, 2 * d["t"] * d["e"]
    elif kind == "attention":
        a = d["h"] * d["hd"]
        w, act = 4 * d["e"] * a, d["t"] * (2 * d["e"] + 4 * a) + d["h"] * d["t"] * d["t"]
    elif kind == "ffn":
        w, act = 2 * d["e"] * d["f"], d["t"] * (2 * d["e"] + 2 * d["f"])
    elif kind == "time_reduction":
        w, act = d["e"] * d["e"] * d["k"], 2 * d["t"] * d["e"]
    elif kind == "upsample":
        w, act = d["e"] * d["e"] * d["f"], d["t"] * d["e"] + d["frames"] * d["e"]
    else:
        raise RuntimeError(f"internal error: no traffic model for block kind {kind!r}")
    return float(w * wbytes + act * 4)
