"""The `student` search space: architectures to train by distillation, varying what the
LightHuBERT space cannot.

LightHuBERT's space keeps the 512-channel conv extractor fixed, and under tight budgets that
extractor alone is about a third of HuBERT Base's compute (models.md). This space also varies:

- the frontend: the HuBERT-shaped 7-layer waveform extractor with per-layer channel widths
  (pruned channels, as HJ-Pruning / DPHuBERT do) or the Fast-HuBERT log-mel filterbank with a
  2-layer conv subsampler of a chosen width;
- time reduction (FitHuBERT): a stride-2 conv before layer 1, so every layer runs at 25 Hz;
- depth, embed width, and per layer the number of heads and the FFN width.

`Student` is one point of the space (a frozen, hashable genotype); `StudentSpace.to_arch`
turns it into an ArchSpec. Sampling, mutation and crossover build valid students by
construction, so the search can call them thousands of times a second; a space written by a
user goes through `StudentSpace.from_dict`, which names any unknown or bad key.

File format (JSON, or YAML when PyYAML is installed): docs/search-spaces.md.
This module imports arch and errors only (no torch).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .arch import (ArchSpec, ConvLayer, FilterbankFrontend, LayerSpec, PosConv, TimeReduction, WaveformFrontend)
from .errors import UserError

STUDENT_SCHEMA = "edgekit.student-space/1"
# Kernel and stride of the HuBERT extractor's 7 layers: 320x down-sampling, 400-sample field.
HUBERT_CONV_SHAPE = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))
FRONTENDS = ("waveform", "filterbank")


class SpaceError(UserError, ValueError):
    """A student space description that does not fit: one line naming the key and the fix."""


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Student:
    """One student architecture. frontend "waveform" uses conv_widths (one per extractor layer);
    "filterbank" uses fbank_channels (the subsampler width). time_reduction 1 = none."""

    frontend: str
    conv_widths: tuple[int, ...]
    fbank_channels: int
    time_reduction: int
    embed_dim: int
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.heads)

    def describe(self) -> str:
        rng = lambda v: str(min(v)) if min(v) == max(v) else f"{min(v)}-{max(v)}"  # noqa: E731
        front = f"conv {rng(self.conv_widths)}ch" if self.frontend == "waveform" else f"fbank {self.fbank_channels}ch"
        tr = f" /{self.time_reduction}" if self.time_reduction > 1 else ""
        return f"{front}{tr} E{self.embed_dim} L{self.depth} H{rng(self.heads)} F{rng(self.ffn_dims)}"

    def to_dict(self) -> dict:
        return {"frontend": self.frontend, "conv_widths": list(self.conv_widths),
                "fbank_channels": self.fbank_channels, "time_reduction": self.time_reduction,
                "embed_dim": self.embed_dim, "heads": list(self.heads), "ffn_dims": list(self.ffn_dims)}


@dataclass(frozen=True)
class StudentSpace:
    name: str
    depths: tuple[int, ...]
    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_ratios: tuple[float, ...]
    conv_widths: tuple[int, ...] = (512,)  # channel choices of each extractor layer
    conv_norm: str = "group"
    filterbank: bool = False  # also offer the log-mel filterbank frontend
    fbank_mels: int = 80
    fbank_channels: tuple[int, ...] = (1024,)  # subsampler conv widths (a GLU halves them)
    time_reduction: tuple[int, ...] = (1,)  # factors; 1 = none
    head_dim: int = 64
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16

    def __post_init__(self) -> None:
        for name in ("depths", "embed_dims", "heads", "ffn_ratios", "conv_widths", "fbank_channels",
                     "time_reduction"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not values:
                raise SpaceError(f"space.{name}={values!r} is invalid: expected a non-empty list of choices")
            if len(set(values)) != len(values):
                raise SpaceError(f"space.{name}={list(values)} has duplicates: list each choice once")
            object.__setattr__(self, name, tuple(sorted(values)))
        for name in ("depths", "embed_dims", "heads", "conv_widths", "fbank_channels", "time_reduction"):
            for v in getattr(self, name):
                if not _int(v) or v <= 0:
                    raise SpaceError(f"space.{name} contains {v!r}: expected positive integers")
        for name in ("head_dim", "pos_conv_kernel", "pos_conv_groups", "fbank_mels"):
            v = getattr(self, name)
            if not _int(v) or v <= 0:
                raise SpaceError(f"space.{name}={v!r} is invalid: expected a positive integer")
        for e in self.embed_dims:
            if e % self.pos_conv_groups:
                raise SpaceError(f"space.embed_dims contains {e}: must be divisible by pos_conv_groups "
                                 f"({self.pos_conv_groups})")
        for r in self.ffn_ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0:
                raise SpaceError(f"space.ffn_ratios contains {r!r}: expected positive numbers")
        for c in self.fbank_channels:
            if c % 2:
                raise SpaceError(f"space.fbank_channels contains {c}: must be even (a GLU halves it)")
        for f in self.time_reduction:
            if f not in (1, 2, 3, 4):
                raise SpaceError(f"space.time_reduction contains {f}: expected factors in 1..4 (1 = none)")
        if self.conv_norm not in ("group", "layer", "none"):
            raise SpaceError(f"space.conv_norm={self.conv_norm!r} is invalid: expected group, layer or none")
        if not isinstance(self.filterbank, bool):
            raise SpaceError(f"space.filterbank={self.filterbank!r} is invalid: expected true or false")
        # ffn dims per embed dim, in ratio order (at least 1 unit), for fast sampling.
        object.__setattr__(self, "_ffn", {e: tuple(max(1, int(round(r * e))) for r in self.ffn_ratios)
                                          for e in self.embed_dims})
        # Built parts are immutable: reuse them (to_arch runs thousands of times a second).
        object.__setattr__(self, "_parts", {})

    # ----------------------------------------------------------------- facts
    @property
    def frontends(self) -> tuple[str, ...]:
        return FRONTENDS if self.filterbank else FRONTENDS[:1]

    def ffn_dims_for(self, embed_dim: int) -> tuple[int, ...]:
        return self._ffn[embed_dim]  # type: ignore[attr-defined]

    def cardinality(self) -> int:
        fronts = len(self.conv_widths) ** len(HUBERT_CONV_SHAPE) + (len(self.fbank_channels) if self.filterbank else 0)
        per_layer = len(self.heads) * len(self.ffn_ratios)
        return fronts * len(self.time_reduction) * len(self.embed_dims) * sum(per_layer ** d for d in self.depths)

    def without(self, filterbank: bool | None = None, time_reduction: bool | None = None) -> "StudentSpace":
        """This space with the filterbank frontend and/or time reduction left out (when a latency
        table cannot price those blocks)."""
        from dataclasses import replace

        out = self
        if filterbank:
            out = replace(out, filterbank=False)
        if time_reduction:
            out = replace(out, time_reduction=(1,))
        return out

    # ----------------------------------------------------------------- named points
    def _uniform(self, fe: str, width: int, fb: int, tr: int, e: int, depth: int, h: int, f: int) -> Student:
        widths = (width,) * len(HUBERT_CONV_SHAPE) if fe == "waveform" else ()
        return Student(fe, widths, fb if fe == "filterbank" else 0, tr, e, (h,) * depth, (f,) * depth)

    def largest(self) -> Student:
        e = self.embed_dims[-1]
        return self._uniform("waveform", self.conv_widths[-1], 0, self.time_reduction[0], e, self.depths[-1],
                             self.heads[-1], self.ffn_dims_for(e)[-1])

    def smallest(self) -> Student:
        e = self.embed_dims[0]
        if self.filterbank:
            fe, w, fb = "filterbank", 0, self.fbank_channels[0]
        else:
            fe, w, fb = "waveform", self.conv_widths[0], 0
        return self._uniform(fe, w, fb, self.time_reduction[-1], e, self.depths[0], self.heads[0],
                             self.ffn_dims_for(e)[0])

    # ----------------------------------------------------------------- operators
    def sample(self, rng: random.Random) -> Student:
        fe = self.frontends[rng.randrange(len(self.frontends))]
        if fe == "waveform":
            widths = tuple(self.conv_widths[rng.randrange(len(self.conv_widths))] for _ in HUBERT_CONV_SHAPE)
            fb = 0
        else:
            widths, fb = (), self.fbank_channels[rng.randrange(len(self.fbank_channels))]
        tr = self.time_reduction[rng.randrange(len(self.time_reduction))]
        e = self.embed_dims[rng.randrange(len(self.embed_dims))]
        d = self.depths[rng.randrange(len(self.depths))]
        ffn = self.ffn_dims_for(e)
        heads = tuple(self.heads[rng.randrange(len(self.heads))] for _ in range(d))
        ffns = tuple(ffn[rng.randrange(len(ffn))] for _ in range(d))
        return Student(fe, widths, fb, tr, e, heads, ffns)

    def _ratio_idx(self, s: Student) -> list[int]:
        dims = self.ffn_dims_for(s.embed_dim)
        return [dims.index(f) for f in s.ffn_dims]

    def mutate(self, s: Student, rng: random.Random, prob: float = 0.1) -> Student:
        """Resample each choice with probability `prob`; a new embed dim keeps each layer's FFN
        ratio, a new depth keeps the first layers' choices."""
        fe, widths, fb = s.frontend, list(s.conv_widths), s.fbank_channels
        if len(self.frontends) > 1 and rng.random() < prob:
            fe = self.frontends[rng.randrange(len(self.frontends))]
            if fe == "waveform" and not widths:
                widths = [self.conv_widths[rng.randrange(len(self.conv_widths))]] * len(HUBERT_CONV_SHAPE)
            if fe == "filterbank" and not fb:
                fb = self.fbank_channels[rng.randrange(len(self.fbank_channels))]
        if fe == "waveform":
            for i in range(len(widths)):
                if rng.random() < prob:
                    widths[i] = self.conv_widths[rng.randrange(len(self.conv_widths))]
            fb = 0
        else:
            widths = []
            if rng.random() < prob:
                fb = self.fbank_channels[rng.randrange(len(self.fbank_channels))]
        tr = s.time_reduction
        if rng.random() < prob:
            tr = self.time_reduction[rng.randrange(len(self.time_reduction))]
        e = s.embed_dim
        if rng.random() < prob:
            e = self.embed_dims[rng.randrange(len(self.embed_dims))]
        ratios, heads = self._ratio_idx(s), list(s.heads)
        d = s.depth
        if rng.random() < prob:
            d = self.depths[rng.randrange(len(self.depths))]
        while len(heads) < d:
            heads.append(self.heads[rng.randrange(len(self.heads))])
            ratios.append(rng.randrange(len(self.ffn_ratios)))
        heads, ratios = heads[:d], ratios[:d]
        for i in range(d):
            if rng.random() < prob:
                heads[i] = self.heads[rng.randrange(len(self.heads))]
            if rng.random() < prob:
                ratios[i] = rng.randrange(len(self.ffn_ratios))
        ffn = self.ffn_dims_for(e)
        return Student(fe, tuple(widths), fb, tr, e, tuple(heads), tuple(ffn[j] for j in ratios))

    def crossover(self, a: Student, b: Student, rng: random.Random) -> Student:
        """Uniform crossover: the frontend comes whole from one parent, every other choice from
        either parent with equal chance."""
        src = a if rng.random() < 0.5 else b
        fe, widths, fb = src.frontend, src.conv_widths, src.fbank_channels
        if a.frontend == b.frontend == "waveform":
            widths = tuple(x if rng.random() < 0.5 else y for x, y in zip(a.conv_widths, b.conv_widths))
        tr = a.time_reduction if rng.random() < 0.5 else b.time_reduction
        e = a.embed_dim if rng.random() < 0.5 else b.embed_dim
        d = a.depth if rng.random() < 0.5 else b.depth
        ra, rb = self._ratio_idx(a), self._ratio_idx(b)
        heads, ratios = [], []
        for i in range(d):
            pa, pb = i < a.depth, i < b.depth
            use_a = not pb or (pa and rng.random() < 0.5)
            heads.append(a.heads[i] if use_a else b.heads[i])
            use_a = not pb or (pa and rng.random() < 0.5)
            ratios.append(ra[i] if use_a else rb[i])
        ffn = self.ffn_dims_for(e)
        return Student(fe, widths, fb, tr, e, tuple(heads), tuple(ffn[j] for j in ratios))

    # ----------------------------------------------------------------- to ArchSpec
    def _part(self, key: tuple, build: Any) -> Any:
        parts = self._parts  # type: ignore[attr-defined]
        hit = parts.get(key)
        if hit is None:
            hit = parts[key] = build()
        return hit

    def to_arch(self, s: Student, name: str | None = None) -> ArchSpec:
        if s.frontend == "waveform":
            frontend: Any = self._part(("fe",) + s.conv_widths, lambda: WaveformFrontend(
                tuple(ConvLayer(c, k, st) for c, (k, st) in zip(s.conv_widths, HUBERT_CONV_SHAPE)), norm=self.conv_norm))
        else:
            c = s.fbank_channels
            frontend = self._part(("fb", c), lambda: FilterbankFrontend(
                n_mels=self.fbank_mels, subsampler=(ConvLayer(c, 5, 2), ConvLayer(c, 5, 2))))
        layers = tuple(self._part((h, f), lambda h=h, f=f: LayerSpec(h, f, self.head_dim))
                       for h, f in zip(s.heads, s.ffn_dims))
        tr = TimeReduction(0, s.time_reduction, s.time_reduction, upsample=True) if s.time_reduction > 1 else None
        return ArchSpec(frontend=frontend, embed_dim=s.embed_dim, layers=layers, feature_layer_norm=True,
                        pos_conv=PosConv(self.pos_conv_kernel, self.pos_conv_groups, weight_norm=True),
                        time_reduction=tr, name=name if name is not None else f"{self.name}[{s.describe()}]")

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"schema": STUDENT_SCHEMA, "kind": "student"}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "space") -> "StudentSpace":
        if not isinstance(data, Mapping):
            raise SpaceError(f"{where}: a student space must be an object, got {type(data).__name__}")
        data = dict(data)
        schema = data.pop("schema", STUDENT_SCHEMA)
        kind = data.pop("kind", "student")
        if schema != STUDENT_SCHEMA or kind != "student":
            raise SpaceError(f"{where}: schema={schema!r} kind={kind!r} is not a student space; expected schema "
                             f"{STUDENT_SCHEMA!r} and kind 'student'")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpaceError(f"{where}: unknown key {unknown[0]!r}{hint}; allowed keys: {', '.join(allowed)}")
        missing = [k for k in ("name", "depths", "embed_dims", "heads", "ffn_ratios") if k not in data]
        if missing:
            raise SpaceError(f"{where}: missing key {missing[0]!r}; a student space needs name, depths, "
                             "embed_dims, heads and ffn_ratios")
        for k, v in data.items():
            if isinstance(v, list):
                data[k] = tuple(v)
        try:
            return cls(**data)
        except SpaceError as e:
            raise SpaceError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "StudentSpace":
        return cls.from_dict(read_space_file(path), str(path))


def read_space_file(path: str | Path) -> Any:
    """A JSON (.json) or YAML (.yaml/.yml, needs PyYAML) file -> its data."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"search space file {p} does not exist; give a space name or a .json/.yaml file") from None
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore
        except ImportError:
            raise UserError(f"{p}: reading YAML needs PyYAML (pip install pyyaml); or write the space as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpaceError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpaceError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}); expected a search space object") from None


# --------------------------------------------------------------------------- registry


def _builtin() -> dict[str, StudentSpace]:
    return {
        # Covers LightHuBERT Small/Base-like encoders on the full extractor, DistilHuBERT-like
        # shallow ones, FitHuBERT-like thin ones at 25 Hz and pruned or filterbank frontends.
        "student": StudentSpace("student", depths=(2, 3, 4, 6, 8, 10, 12), embed_dims=(256, 384, 512, 640, 768),
                                heads=(4, 6, 8, 10, 12), ffn_ratios=(1.0, 2.0, 3.0, 4.0),
                                conv_widths=(128, 256, 384, 512), filterbank=True, time_reduction=(1, 2)),
        # Test-sized: matches the `tiny` latency grid (32-ch extractor, 16-dim heads).
        "tiny-student": StudentSpace("tiny-student", depths=(1, 2, 3), embed_dims=(32, 48), heads=(1, 2, 4),
                                     ffn_ratios=(1.0, 2.0, 4.0), conv_widths=(16, 24, 32), filterbank=True,
                                     fbank_mels=40, fbank_channels=(64,), time_reduction=(1,), head_dim=16,
                                     pos_conv_kernel=16, pos_conv_groups=4),
    }


STUDENT_SPACES = ("student", "tiny-student")


def get_student_space(name: str) -> StudentSpace:
    spaces = _builtin()
    if name not in spaces:
        raise UserError(f"unknown student space {name!r}; known: {', '.join(spaces)}")
    return spaces[name]


__all__ = ["HUBERT_CONV_SHAPE", "STUDENT_SCHEMA", "STUDENT_SPACES", "SpaceError", "Student", "StudentSpace",
           "get_student_space", "read_space_file"]
