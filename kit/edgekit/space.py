"""Search spaces over a LightHuBERT-style supernet: choices, subnets, sampling, mutation,
crossover, cardinality, and the standalone ArchSpec of a subnet.

Three frozen dataclasses:

- `SupernetShape`: the weight container's fixed dimensions (conv extractor, width, heads,
  head dim, FFN, layers, positional conv) and the depth keep-maps (which supernet layers a
  shallower subnet runs). The published one is HuBERT Base shaped; tiny ones keep tests fast.
- `SearchSpace`: the choices (embed dims, per-layer heads, per-layer FFN ratios, depths) over
  one `SupernetShape`, plus the named default subnet.
- `Subnet`: one concrete choice: embed_dim, depth, heads per layer, ffn_dims per layer.

Sampling and mutation do no validation beyond the dataclass's own cheap structural checks:
what they build is valid by construction, and the search calls them thousands of times a
second. A subnet coming from a user goes through `space.validate()`, which names the field,
the value and the allowed values.

This module imports arch only (no torch), so the search can use it without building models.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Union

from .arch import ArchSpec, ConvLayer, LayerSpec, PosConv, WaveformFrontend, hubert_frontend
from .errors import UserError

SPACE_SCHEMA = "edgekit.space/1"


class SubnetError(UserError, ValueError):
    """A subnet (or space description) that does not fit: one line naming field, value, allowed."""


# The published LightHuBERT depth maps over a 12-layer supernet (1 = run the layer). Depth 11
# drops layer 12; depth 10 drops layers 8 and 12 (1-indexed); 6-9 exist upstream as well.
_LIGHTHUBERT_KEEP = {
    6: (1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0),
    7: (1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0),
    8: (1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0),
    9: (1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0),
    10: (1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0),
    11: (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),
}


def lighthubert_keep_maps() -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Published keep-maps as (depth, kept 0-based layer indices) pairs."""
    return tuple((d, tuple(i for i, keep in enumerate(m) if keep)) for d, m in sorted(_LIGHTHUBERT_KEEP.items()))


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- supernet shape


@dataclass(frozen=True)
class SupernetShape:
    """Fixed dimensions of the weight container.

    The FFN weights are shared in chunks of `embed_dim` rows (fc1) / columns (fc2), so
    `ffn_dim` must be a whole number of chunks. keep_maps: (depth, kept layer indices) pairs for
    every depth below `layers` a subnet may use; the full depth keeps every layer.
    """

    frontend: WaveformFrontend = field(default_factory=hubert_frontend)
    embed_dim: int = 768
    heads: int = 12
    head_dim: int = 64
    ffn_dim: int = 3072
    layers: int = 12
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    keep_maps: tuple[tuple[int, tuple[int, ...]], ...] | None = None  # None: published maps for 12 layers
    mask_emb: bool = True  # the container keeps the pretraining mask embedding (1:1 with checkpoints)

    def __post_init__(self) -> None:
        if not isinstance(self.frontend, WaveformFrontend):
            raise SubnetError(f"supernet.frontend={self.frontend!r} is invalid: the supernet has a "
                              "fixed waveform conv extractor (WaveformFrontend)")
        for name in ("embed_dim", "heads", "head_dim", "ffn_dim", "layers", "pos_conv_kernel", "pos_conv_groups"):
            v = getattr(self, name)
            if not _int(v) or v <= 0:
                raise SubnetError(f"supernet.{name}={v!r} is invalid: expected a positive integer")
        if self.ffn_dim % self.embed_dim:
            raise SubnetError(f"supernet.ffn_dim={self.ffn_dim} is invalid: must be a multiple of "
                              f"embed_dim ({self.embed_dim}), the FFN is shared in chunks of embed_dim")
        if self.embed_dim % self.pos_conv_groups:
            raise SubnetError(f"supernet.pos_conv_groups={self.pos_conv_groups} is invalid: must divide "
                              f"embed_dim ({self.embed_dim})")
        given = self.keep_maps
        if given is None:
            given = lighthubert_keep_maps() if self.layers == 12 else ()
        maps = []
        for depth, kept in given:
            kept = tuple(kept)
            if not _int(depth) or not 0 < depth < self.layers:
                raise SubnetError(f"supernet.keep_maps has depth {depth!r}: expected depths in 1..{self.layers - 1} "
                                  "(the full depth keeps every layer)")
            if len(kept) != depth or list(kept) != sorted(set(kept)) or kept[-1] >= self.layers or kept[0] < 0:
                raise SubnetError(f"supernet.keep_maps[{depth}]={list(kept)} is invalid: expected {depth} "
                                  f"increasing layer indices in 0..{self.layers - 1}")
            maps.append((depth, kept))
        object.__setattr__(self, "keep_maps", tuple(sorted(maps)))

    @property
    def attention_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def ffn_chunks(self) -> int:
        return self.ffn_dim // self.embed_dim

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(d for d, _ in self.keep_maps) + (self.layers,)

    def keep_map(self, depth: int) -> tuple[int, ...]:
        """Supernet layer indices (0-based) that a subnet of `depth` layers runs, in order."""
        if depth == self.layers:
            return tuple(range(self.layers))
        for d, kept in self.keep_maps:
            if d == depth:
                return kept
        raise SubnetError(f"depth={depth} is invalid: this supernet has keep-maps for depths "
                          f"{list(self.depths)}")

    def check_fits(self, sub: "Subnet") -> "Subnet":
        """Raise SubnetError unless the subnet's widths fit inside this container."""
        if sub.embed_dim > self.embed_dim or sub.embed_dim % self.pos_conv_groups:
            raise SubnetError(f"subnet.embed_dim={sub.embed_dim} does not fit the supernet: expected <= "
                              f"{self.embed_dim} and divisible by {self.pos_conv_groups}")
        self.keep_map(sub.depth)
        for i, (h, f) in enumerate(zip(sub.heads, sub.ffn_dims)):
            if h > self.heads:
                raise SubnetError(f"subnet.heads[{i}]={h} does not fit the supernet: expected <= {self.heads}")
            if math.ceil(f / sub.embed_dim) > self.ffn_chunks:
                raise SubnetError(f"subnet.ffn_dims[{i}]={f} does not fit the supernet: expected <= "
                                  f"{self.ffn_chunks} x embed_dim ({self.ffn_chunks * sub.embed_dim})")
        return sub

    def subnet_arch(self, sub: "Subnet", name: str = "") -> ArchSpec:
        """The extracted standalone model of a subnet: this fixed frontend, the sliced widths,
        a plain (folded) positional-conv weight, no mask embedding."""
        layers = tuple(LayerSpec(h, f, self.head_dim) for h, f in zip(sub.heads, sub.ffn_dims))
        return ArchSpec(frontend=self.frontend, embed_dim=sub.embed_dim, layers=layers, feature_layer_norm=True,
                        pos_conv=PosConv(self.pos_conv_kernel, self.pos_conv_groups, weight_norm=False),
                        layer_norm_first=False, mask_emb=False, name=name)

    def full_arch(self, name: str = "") -> ArchSpec:
        """The full-size model whose SpeechEncoder state dict maps 1:1 onto the supernet's."""
        return ArchSpec(frontend=self.frontend, embed_dim=self.embed_dim,
                        layers=tuple(LayerSpec(self.heads, self.ffn_dim, self.head_dim) for _ in range(self.layers)),
                        feature_layer_norm=True,
                        pos_conv=PosConv(self.pos_conv_kernel, self.pos_conv_groups, weight_norm=True),
                        layer_norm_first=False, mask_emb=self.mask_emb, name=name)

    def to_dict(self) -> dict:
        return {"frontend": {"layers": [[c.channels, c.kernel, c.stride] for c in self.frontend.layers],
                             "norm": self.frontend.norm, "conv_bias": self.frontend.conv_bias},
                "embed_dim": self.embed_dim, "heads": self.heads, "head_dim": self.head_dim,
                "ffn_dim": self.ffn_dim, "layers": self.layers, "pos_conv_kernel": self.pos_conv_kernel,
                "pos_conv_groups": self.pos_conv_groups,
                "keep_maps": {str(d): list(k) for d, k in self.keep_maps}, "mask_emb": self.mask_emb}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SupernetShape":
        data = _check_keys(data, "supernet", {f for f in cls.__dataclass_fields__})
        kwargs = dict(data)
        if "frontend" in kwargs:
            fe = _check_keys(kwargs["frontend"], "supernet.frontend", {"layers", "norm", "conv_bias"})
            try:
                layers = tuple(ConvLayer(*map(int, c)) for c in fe["layers"])
                kwargs["frontend"] = WaveformFrontend(layers, norm=fe.get("norm", "group"),
                                                      conv_bias=bool(fe.get("conv_bias", False)))
            except (KeyError, TypeError, ValueError) as e:
                raise SubnetError(f"supernet.frontend is invalid ({e}): expected "
                                  "{\"layers\": [[channels, kernel, stride], ...], \"norm\": \"group\"}") from None
        if "keep_maps" in kwargs:
            km = kwargs["keep_maps"]
            if not isinstance(km, Mapping):
                raise SubnetError(f"supernet.keep_maps={km!r} is invalid: expected an object "
                                  "{\"depth\": [kept layer indices]}")
            try:
                kwargs["keep_maps"] = tuple((int(d), tuple(int(i) for i in k)) for d, k in km.items())
            except (TypeError, ValueError):
                raise SubnetError(f"supernet.keep_maps={km!r} is invalid: expected integer depths and "
                                  "lists of integer layer indices") from None
        return cls(**kwargs)


# --------------------------------------------------------------------------- subnet


@dataclass(frozen=True)
class Subnet:
    """One architecture of a space: a shared embed dim, the depth, and per-layer heads and FFN
    dims (one entry per *run* layer, in order; the keep-map says which supernet layer each is)."""

    embed_dim: int
    depth: int
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "ffn_dims", tuple(self.ffn_dims))
        if not _int(self.embed_dim) or self.embed_dim <= 0:
            raise SubnetError(f"subnet.embed_dim={self.embed_dim!r} is invalid: expected a positive integer")
        if not _int(self.depth) or self.depth <= 0:
            raise SubnetError(f"subnet.depth={self.depth!r} is invalid: expected a positive integer")
        for name in ("heads", "ffn_dims"):
            values = getattr(self, name)
            if len(values) != self.depth:
                raise SubnetError(f"subnet.{name} has {len(values)} entries: expected one per layer "
                                  f"(depth={self.depth})")
            for v in values:
                if not _int(v) or v <= 0:
                    raise SubnetError(f"subnet.{name} contains {v!r}: expected positive integers")

    def to_dict(self) -> dict:
        return {"embed_dim": self.embed_dim, "depth": self.depth, "heads": list(self.heads),
                "ffn_dims": list(self.ffn_dims)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping) -> "Subnet":
        """Accepts {"embed_dim", "depth", "heads", "ffn_dims"} or "ffn_ratios" instead of
        "ffn_dims"; a scalar heads / ffn value applies to every layer (then depth is required).
        The upstream LightHuBERT keys (layer_num, heads_num, ffn_embed, atten_dim, slide_wsz)
        are understood too, so subnets copied from its logs load as they are."""
        if not isinstance(data, Mapping):
            raise SubnetError(f"a subnet must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        upstream = {"layer_num": "depth", "heads_num": "heads", "ffn_embed": "ffn_dims", "ffn_ratio": "ffn_ratios"}
        for old, new in upstream.items():
            if old in data:
                if new in data:
                    raise SubnetError(f"subnet has both {old!r} and {new!r}: give one")
                data[new] = data.pop(old)
        atten = data.pop("atten_dim", None)
        swz = data.pop("slide_wsz", None)
        allowed = {"embed_dim", "depth", "heads", "ffn_dims", "ffn_ratios"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SubnetError(f"subnet: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        if "embed_dim" not in data:
            raise SubnetError("subnet: missing 'embed_dim'; give e.g. {\"embed_dim\": 384, \"depth\": 12, "
                              "\"heads\": 6, \"ffn_ratios\": 4.0}")
        embed = data["embed_dim"]
        if not _int(embed) or embed <= 0:
            raise SubnetError(f"subnet.embed_dim={embed!r} is invalid: expected a positive integer")
        if ("ffn_dims" in data) == ("ffn_ratios" in data):
            raise SubnetError("subnet: give exactly one of 'ffn_dims' or 'ffn_ratios'")
        depth = data.get("depth")
        lists = [v for k in ("heads", "ffn_dims", "ffn_ratios") if isinstance(v := data.get(k), (list, tuple))]
        if depth is None:
            if not lists:
                raise SubnetError("subnet: missing 'depth' (needed when heads and FFN are given as scalars)")
            depth = len(lists[0])
        if not _int(depth) or depth <= 0:
            raise SubnetError(f"subnet.depth={depth!r} is invalid: expected a positive integer")

        def per_layer(key: str) -> list:
            v = data[key]
            if isinstance(v, (list, tuple)):
                if len(v) != depth:
                    raise SubnetError(f"subnet.{key} has {len(v)} entries: expected one per layer (depth={depth})")
                return list(v)
            return [v] * depth

        heads = per_layer("heads")
        if "ffn_dims" in data:
            ffn = per_layer("ffn_dims")
        else:
            ffn = []
            for r in per_layer("ffn_ratios"):
                if not isinstance(r, (int, float)) or isinstance(r, bool):
                    raise SubnetError(f"subnet.ffn_ratios contains {r!r}: expected numbers")
                f = r * embed
                if abs(f - round(f)) > 1e-6:
                    raise SubnetError(f"subnet.ffn_ratios contains {r!r}: {r} x embed_dim {embed} is not an integer")
                ffn.append(int(round(f)))
        sub = cls(embed, depth, tuple(heads), tuple(ffn))
        if atten is not None and list(atten) != [h * 64 for h in sub.heads]:
            raise SubnetError(f"subnet.atten_dim={list(atten)} does not match heads x 64 ({[h * 64 for h in sub.heads]})")
        if swz is not None and any(w != "global" for w in swz):
            raise SubnetError(f"subnet.slide_wsz={list(swz)} is not supported: only global attention (\"global\")")
        return sub

    @classmethod
    def from_json(cls, text: str) -> "Subnet":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SubnetError(f"subnet is not valid JSON: {e}") from None

    @classmethod
    def from_arch(cls, spec: ArchSpec) -> "Subnet":
        """The subnet an ArchSpec describes (widths only; `space.check_arch` checks the rest)."""
        return cls(spec.embed_dim, spec.num_layers, tuple(layer.heads for layer in spec.layers),
                   tuple(layer.ffn_dim for layer in spec.layers))

    def uniform(self) -> bool:
        return len(set(self.heads)) <= 1 and len(set(self.ffn_dims)) <= 1

    def describe(self) -> str:
        rng = lambda v: str(min(v)) if min(v) == max(v) else f"{min(v)}-{max(v)}"  # noqa: E731
        return f"E{self.embed_dim} L{self.depth} H{rng(self.heads)} F{rng(self.ffn_dims)}"


SubnetLike = Union[Subnet, Mapping, str, ArchSpec]


# --------------------------------------------------------------------------- RNG


class _NumpyRng:
    """random.Random's two methods used here, on top of a numpy Generator."""

    def __init__(self, gen: Any):
        self._gen = gen

    def randrange(self, n: int) -> int:
        return int(self._gen.integers(n))

    def random(self) -> float:
        return float(self._gen.random())


def _as_rng(rng: Any) -> Any:
    if rng is None:
        return random.Random()
    if isinstance(rng, random.Random):
        return rng
    if _int(rng):
        return random.Random(rng)
    if hasattr(rng, "integers") and hasattr(rng, "random"):
        return _NumpyRng(rng)
    raise TypeError(f"rng={rng!r}: expected a random.Random, a numpy Generator, an int seed or None")


# --------------------------------------------------------------------------- space


@dataclass(frozen=True)
class SearchSpace:
    """Choices over a supernet. Every layer picks its heads and FFN ratio independently; the
    embed dim is shared; depth picks a keep-map. FFN dim = ratio x embed dim."""

    name: str
    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_ratios: tuple[float, ...]
    depths: tuple[int, ...]
    supernet: SupernetShape = field(default_factory=SupernetShape)
    default_subnet: Subnet | None = None  # None: the middle choice of everything, full depth

    def __post_init__(self) -> None:
        for name in ("embed_dims", "heads", "ffn_ratios", "depths"):
            values = tuple(getattr(self, name))
            if not values:
                raise SubnetError(f"space.{name} is empty: give at least one choice")
            if len(set(values)) != len(values):
                raise SubnetError(f"space.{name}={list(values)} has duplicates: each choice once")
            object.__setattr__(self, name, tuple(sorted(values)))
        sn = self.supernet
        if not isinstance(sn, SupernetShape):
            raise SubnetError(f"space.supernet={sn!r} is invalid: expected a SupernetShape")
        for e in self.embed_dims:
            if not _int(e) or not 0 < e <= sn.embed_dim or e % sn.pos_conv_groups:
                raise SubnetError(f"space.embed_dims contains {e!r}: expected positive integers <= "
                                  f"{sn.embed_dim} divisible by the {sn.pos_conv_groups} positional-conv groups")
        for h in self.heads:
            if not _int(h) or not 0 < h <= sn.heads:
                raise SubnetError(f"space.heads contains {h!r}: expected integers in 1..{sn.heads}")
        for r in self.ffn_ratios:
            if not isinstance(r, (int, float)) or isinstance(r, bool) or r <= 0:
                raise SubnetError(f"space.ffn_ratios contains {r!r}: expected positive numbers")
            for e in self.embed_dims:
                f = r * e
                if abs(f - round(f)) > 1e-6:
                    raise SubnetError(f"space.ffn_ratios contains {r}: {r} x embed dim {e} is not an integer")
                if math.ceil(round(f) / e) > sn.ffn_chunks:
                    raise SubnetError(f"space.ffn_ratios contains {r}: needs {math.ceil(round(f) / e)} FFN chunks, "
                                      f"the supernet has {sn.ffn_chunks} (ffn_dim {sn.ffn_dim} / embed {sn.embed_dim})")
        for d in self.depths:
            if not _int(d) or d not in sn.depths:
                raise SubnetError(f"space.depths contains {d!r}: the supernet has keep-maps for depths {list(sn.depths)}")
        # Lookup tables for fast sampling: ffn dims per embed dim, in ratio order.
        object.__setattr__(self, "_ffn_table", {e: tuple(int(round(r * e)) for r in self.ffn_ratios)
                                                for e in self.embed_dims})
        if self.default_subnet is not None:
            self.validate(self.default_subnet)

    # ----------------------------------------------------------------- facts
    @property
    def head_dim(self) -> int:
        return self.supernet.head_dim

    def keep_map(self, depth: int) -> tuple[int, ...]:
        """0-based supernet layers run by a subnet of `depth` layers."""
        return self.supernet.keep_map(depth)

    def ffn_dims_for(self, embed_dim: int) -> tuple[int, ...]:
        return self._ffn_table[embed_dim]  # type: ignore[attr-defined]

    def cardinality(self) -> int:
        """Number of distinct subnets: |E| x sum over depths d of (|heads| x |ratios|)^d."""
        per_layer = len(self.heads) * len(self.ffn_ratios)
        return len(self.embed_dims) * sum(per_layer ** d for d in self.depths)

    # ----------------------------------------------------------------- named subnets
    def _uniform(self, embed: int, depth: int, heads: int, ffn: int) -> Subnet:
        return Subnet(embed, depth, (heads,) * depth, (ffn,) * depth)

    def largest(self) -> Subnet:
        e = self.embed_dims[-1]
        return self._uniform(e, self.depths[-1], self.heads[-1], self.ffn_dims_for(e)[-1])

    def smallest(self) -> Subnet:
        e = self.embed_dims[0]
        return self._uniform(e, self.depths[0], self.heads[0], self.ffn_dims_for(e)[0])

    @property
    def default(self) -> Subnet:
        if self.default_subnet is not None:
            return self.default_subnet
        e = self.embed_dims[len(self.embed_dims) // 2]
        ffn = self.ffn_dims_for(e)
        return self._uniform(e, self.depths[-1], self.heads[len(self.heads) // 2], ffn[len(ffn) // 2])

    def resolve(self, subnet: SubnetLike | None) -> Subnet:
        """"default" | "max" | "min" | dict | Subnet | ArchSpec -> a validated Subnet."""
        if subnet is None or subnet == "default":
            return self.default
        if isinstance(subnet, str):
            if subnet in ("max", "largest"):
                return self.largest()
            if subnet in ("min", "smallest"):
                return self.smallest()
            if subnet.lstrip().startswith("{"):
                sub = Subnet.from_json(subnet)
            else:
                raise SubnetError(f"subnet {subnet!r} is not understood: expected default, max, min, "
                                  "a JSON object or a Subnet")
        elif isinstance(subnet, Subnet):
            sub = subnet
        elif isinstance(subnet, ArchSpec):
            sub = self.check_arch(subnet)
        elif isinstance(subnet, Mapping):
            sub = Subnet.from_dict(subnet)
        else:
            raise SubnetError(f"subnet of type {type(subnet).__name__} is not understood: expected default, "
                              "max, min, a dict, a Subnet or an ArchSpec")
        self.validate(sub)
        return sub

    # ----------------------------------------------------------------- validation
    def validate(self, sub: Subnet) -> Subnet:
        """Raise SubnetError naming the first field outside this space."""
        where = f"in space {self.name}"
        if sub.embed_dim not in self.embed_dims:
            raise SubnetError(f"subnet.embed_dim={sub.embed_dim} is not {where}: allowed {list(self.embed_dims)}")
        if sub.depth not in self.depths:
            raise SubnetError(f"subnet.depth={sub.depth} is not {where}: allowed {list(self.depths)}")
        allowed_ffn = self.ffn_dims_for(sub.embed_dim)
        for i, (h, f) in enumerate(zip(sub.heads, sub.ffn_dims)):
            if h not in self.heads:
                raise SubnetError(f"subnet.heads[{i}]={h} is not {where}: allowed {list(self.heads)}")
            if f not in allowed_ffn:
                raise SubnetError(f"subnet.ffn_dims[{i}]={f} is not {where}: allowed for embed_dim "
                                  f"{sub.embed_dim}: {list(allowed_ffn)} (ratios {list(self.ffn_ratios)})")
        return sub

    def contains(self, sub: Subnet) -> bool:
        try:
            self.validate(sub)
        except SubnetError:
            return False
        return True

    def check_arch(self, spec: ArchSpec) -> Subnet:
        """The subnet an ArchSpec is, if it is one this space can extract; else SubnetError."""
        sub = Subnet.from_arch(spec)
        self.validate(sub)
        expected = self.to_arch(sub, name=spec.name)
        for f in ("frontend", "feature_layer_norm", "pos_conv", "layer_norm_first", "time_reduction", "layers"):
            if getattr(spec, f) != getattr(expected, f):
                raise SubnetError(f"arch.{f}={getattr(spec, f)!r} does not match a subnet of space {self.name}: "
                                  f"expected {getattr(expected, f)!r}")
        return sub

    # ----------------------------------------------------------------- sampling
    def sample(self, rng: Any = None) -> Subnet:
        """A uniformly random subnet (each choice independent), reproducible for a seeded rng."""
        r = _as_rng(rng)
        e = self.embed_dims[r.randrange(len(self.embed_dims))]
        d = self.depths[r.randrange(len(self.depths))]
        ffn, heads = self.ffn_dims_for(e), self.heads
        hs = tuple(heads[r.randrange(len(heads))] for _ in range(d))
        fs = tuple(ffn[r.randrange(len(ffn))] for _ in range(d))
        return Subnet(e, d, hs, fs)

    def mutate(self, sub: Subnet, rng: Any = None, prob: float = 0.1) -> Subnet:
        """Resample each choice with probability `prob`. A new embed dim keeps each layer's FFN
        ratio; a new depth keeps the first layers' choices and samples any new ones."""
        r = _as_rng(rng)
        e, d = sub.embed_dim, sub.depth
        ratio_idx = [self._ratio_index(sub.embed_dim, f) for f in sub.ffn_dims]
        heads = list(sub.heads)
        if r.random() < prob:
            e = self.embed_dims[r.randrange(len(self.embed_dims))]
        if r.random() < prob:
            d = self.depths[r.randrange(len(self.depths))]
        n_r, n_h = len(self.ffn_ratios), len(self.heads)
        while len(heads) < d:
            heads.append(self.heads[r.randrange(n_h)])
            ratio_idx.append(r.randrange(n_r))
        heads, ratio_idx = heads[:d], ratio_idx[:d]
        for i in range(d):
            if r.random() < prob:
                heads[i] = self.heads[r.randrange(n_h)]
            if r.random() < prob:
                ratio_idx[i] = r.randrange(n_r)
        ffn = self.ffn_dims_for(e)
        return Subnet(e, d, tuple(heads), tuple(ffn[j] for j in ratio_idx))

    def crossover(self, a: Subnet, b: Subnet, rng: Any = None) -> Subnet:
        """Uniform crossover: embed dim, depth and every layer's heads / FFN ratio come from
        either parent with equal chance (a parent lacking a layer gives the other's choice)."""
        r = _as_rng(rng)
        e = a.embed_dim if r.random() < 0.5 else b.embed_dim
        d = a.depth if r.random() < 0.5 else b.depth
        ra = [self._ratio_index(a.embed_dim, f) for f in a.ffn_dims]
        rb = [self._ratio_index(b.embed_dim, f) for f in b.ffn_dims]
        heads, ratios = [], []
        for i in range(d):
            ha = a.heads[i] if i < a.depth else None
            hb = b.heads[i] if i < b.depth else None
            pick_a = hb is None or (ha is not None and r.random() < 0.5)
            heads.append(ha if pick_a else hb)
            xa = ra[i] if i < a.depth else None
            xb = rb[i] if i < b.depth else None
            pick_a = xb is None or (xa is not None and r.random() < 0.5)
            ratios.append(xa if pick_a else xb)
        ffn = self.ffn_dims_for(e)
        return Subnet(e, d, tuple(heads), tuple(ffn[j] for j in ratios))

    def _ratio_index(self, embed: int, ffn_dim: int) -> int:
        try:
            return self.ffn_dims_for(embed).index(ffn_dim)
        except (KeyError, ValueError):
            raise SubnetError(f"subnet.ffn_dims contains {ffn_dim} with embed_dim {embed}: not in space "
                              f"{self.name} (ratios {list(self.ffn_ratios)})") from None

    def enumerate_uniform(self) -> Iterable[Subnet]:
        """Every subnet whose layers all make the same choice (a small, useful sweep)."""
        for e in self.embed_dims:
            for d in self.depths:
                for h in self.heads:
                    for f in self.ffn_dims_for(e):
                        yield self._uniform(e, d, h, f)

    # ----------------------------------------------------------------- standalone spec
    def to_arch(self, sub: Subnet, name: str | None = None) -> ArchSpec:
        """The extracted standalone model (see SupernetShape.subnet_arch)."""
        return self.supernet.subnet_arch(sub, name if name is not None else f"{self.name}[{sub.describe()}]")

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        out = {"schema": SPACE_SCHEMA, "name": self.name, "embed_dims": list(self.embed_dims),
               "heads": list(self.heads), "ffn_ratios": list(self.ffn_ratios), "depths": list(self.depths),
               "supernet": self.supernet.to_dict()}
        if self.default_subnet is not None:
            out["default"] = self.default_subnet.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "SearchSpace":
        keys = {"schema", "name", "embed_dims", "heads", "ffn_ratios", "depths", "supernet", "default"}
        data = dict(_check_keys(data, "space", keys))
        schema = data.pop("schema", SPACE_SCHEMA)
        if schema != SPACE_SCHEMA:
            raise SubnetError(f"space.schema={schema!r} is not supported: expected {SPACE_SCHEMA!r}")
        for k in ("name", "embed_dims", "heads", "ffn_ratios", "depths"):
            if k not in data:
                raise SubnetError(f"space: missing key {k!r}")
        for k in ("embed_dims", "heads", "ffn_ratios", "depths"):
            if not isinstance(data[k], (list, tuple)):
                raise SubnetError(f"space.{k}={data[k]!r} is invalid: expected a list of choices")
        sn = data.get("supernet")
        if sn is None or sn == "hubert-base":
            shape = SupernetShape()
        elif isinstance(sn, str):
            if sn not in _SHAPES:
                raise SubnetError(f"space.supernet={sn!r} is unknown: expected one of {', '.join(_SHAPES)} or an object")
            shape = _SHAPES[sn]()
        else:
            shape = SupernetShape.from_dict(sn)
        default = data.get("default")
        space = cls(name=str(data["name"]), embed_dims=tuple(data["embed_dims"]), heads=tuple(data["heads"]),
                    ffn_ratios=tuple(float(r) for r in data["ffn_ratios"]), depths=tuple(data["depths"]),
                    supernet=shape)
        if default is not None:
            space = replace(space, default_subnet=space.resolve(dict(default)))
        return space

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_file(cls, path: str) -> "SearchSpace":
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UserError(f"search space file {path} does not exist; give a JSON file or a space name "
                            f"({', '.join(list_spaces())})") from None
        except json.JSONDecodeError as e:
            raise SubnetError(f"{path}: not valid JSON ({e}); expected a search space object") from None
        try:
            return cls.from_dict(data)
        except SubnetError as e:
            raise SubnetError(f"{path}: {e}") from None


def _check_keys(data: Any, where: str, allowed: set[str]) -> Mapping:
    if not isinstance(data, Mapping):
        raise SubnetError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SubnetError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return data


# --------------------------------------------------------------------------- registry


def tiny_shape() -> SupernetShape:
    """Test-sized supernet: 32-ch HuBERT-shaped extractor, 64 wide, 4 heads of 16, FFN 256,
    4 layers. Keep-maps mirror the published ones: 3 drops the last layer, 2 keeps layers 1, 3."""
    return SupernetShape(frontend=hubert_frontend(32), embed_dim=64, heads=4, head_dim=16, ffn_dim=256, layers=4,
                         pos_conv_kernel=16, pos_conv_groups=4, keep_maps=((2, (0, 2)), (3, (0, 1, 2))))


_SHAPES = {"hubert-base": SupernetShape, "tiny": tiny_shape}


def _uniform_subnet(embed: int, depth: int, heads: int, ffn: int) -> Subnet:
    return Subnet(embed, depth, (heads,) * depth, (ffn,) * depth)


def _spaces() -> dict[str, SearchSpace]:
    return {
        "lighthubert-base": SearchSpace("lighthubert-base", (512, 640, 768), (8, 10, 12), (3.5, 4.0), (12,),
                                        default_subnet=_uniform_subnet(640, 12, 10, 2560)),
        "lighthubert-small": SearchSpace("lighthubert-small", (256, 384, 512), (4, 6, 8), (3.0, 3.5, 4.0),
                                         (10, 11, 12), default_subnet=_uniform_subnet(384, 12, 6, 1536)),
        # Ratios and widths chosen so partial FFN chunks (48 x 3.5 = 48+48+48+24) and non-trivial
        # keep-maps are exercised.
        "tiny-supernet": SearchSpace("tiny-supernet", (32, 48, 64), (2, 3, 4), (3.0, 3.5, 4.0), (2, 3, 4),
                                     supernet=tiny_shape(), default_subnet=_uniform_subnet(48, 4, 3, 192)),
    }


_SPACES: dict[str, SearchSpace] | None = None


def list_spaces() -> list[str]:
    return sorted(_registry())


def _registry() -> dict[str, SearchSpace]:
    global _SPACES
    if _SPACES is None:
        _SPACES = _spaces()
    return _SPACES


def get_space(name_or_path: str | SearchSpace) -> SearchSpace:
    """A registered space by name, or a space JSON file by path."""
    if isinstance(name_or_path, SearchSpace):
        return name_or_path
    reg = _registry()
    if name_or_path in reg:
        return reg[name_or_path]
    if name_or_path.endswith(".json"):
        return SearchSpace.from_file(name_or_path)
    import difflib
    close = difflib.get_close_matches(name_or_path, list(reg), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"unknown search space {name_or_path!r}{hint} (known: {', '.join(sorted(reg))}, "
                    "or a .json file)")


__all__ = ["SearchSpace", "Subnet", "SubnetError", "SupernetShape", "get_space", "list_spaces",
           "lighthubert_keep_maps", "tiny_shape"]
