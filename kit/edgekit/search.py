"""Hardware-aware architecture search under a latency budget on a device.

The answer is an architecture AND a deployment configuration: every candidate is priced on
every (backend, dtype) latency table the device has (or the ones asked for), and runs on the
fastest one that satisfies the size limits.

Pieces:
- spaces: a LightHuBERT `SearchSpace` (genotype `Subnet`) or a `StudentSpace` (genotype
  `Student`), both with sample / mutate / crossover / to_arch; `resolve_space` reads names and
  JSON/YAML files.
- `Evaluator`: genotype -> `Candidate` (ArchSpec, params, MACs, predicted ms per deployment,
  feasibility), memoised; the latency-only path is pure Python over the predictor.
- algorithms: constrained evolution (HAT / Once-for-All style: population, parents, mutation,
  crossover, over-budget children rejected), NSGA-II over (latency, quality cost) with
  constrained domination (Deb), random search as the baseline. All seeded.
- `SearchResult`: every evaluated candidate, the Pareto front, the chosen one, settings and table
  provenance; `write_outputs` writes search.json, best_arch.json and pareto.png atomically.

Quality comes from edgekit.quality (a declared capacity measure, or a supernet's measured
distillation loss); this module never invents accuracy.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .arch import SAMPLE_RATE, ArchSpec, LayerSpec, TimeReduction, WaveformFrontend, blocks, conv_out_len
from .errors import UserError
from .latency import LatencyTable, Predictor
from .latency.signature import NORM_CODES, BlockSig, block_signatures, make
from .space import SearchSpace, Subnet, get_space, list_spaces
from .student_space import STUDENT_SCHEMA, STUDENT_SPACES, Student, StudentSpace, get_student_space, read_space_file
from .widths import padded_conv_widths, padded_ffn

SEARCH_SCHEMA = "edgekit.search/1"
ALGORITHMS = ("evolution+nsga2", "evolution", "nsga2", "random")
BYTES_PER_PARAM = {"fp32": 4, "int8": 1}
_STUDENT_ONLY_KEYS = {"conv_widths", "conv_norm", "filterbank", "fbank_mels", "fbank_channels", "time_reduction",
                      "head_dim", "pos_conv_kernel", "pos_conv_groups"}

Space = Any  # SearchSpace | StudentSpace
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- spaces


def resolve_space(name_or_path: str) -> Space:
    """A space name (lighthubert-base, lighthubert-small, tiny-supernet, student, tiny-student)
    or a JSON/YAML file. A file is a student space when it says "kind": "student" (or uses a
    student-only key such as conv_widths), else a LightHuBERT supernet space."""
    if name_or_path in STUDENT_SPACES:
        return get_student_space(name_or_path)
    if name_or_path in list_spaces():
        return get_space(name_or_path)
    if not name_or_path.endswith((".json", ".yaml", ".yml")):
        known = ", ".join(sorted(set(list_spaces()) | set(STUDENT_SPACES)))
        raise UserError(f"unknown search space {name_or_path!r}; known: {known}, or a .json/.yaml space file "
                        "(docs/search-spaces.md)")
    data = read_space_file(name_or_path)
    if not isinstance(data, dict):
        raise UserError(f"{name_or_path}: a search space file must hold one object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind == "student" or data.get("schema") == STUDENT_SCHEMA or (kind is None and _STUDENT_ONLY_KEYS & set(data)):
        return StudentSpace.from_dict(data, name_or_path)
    if kind not in (None, "supernet"):
        raise UserError(f"{name_or_path}: kind={kind!r} is invalid: expected 'student' or 'supernet'")
    data = {k: v for k, v in data.items() if k != "kind"}
    try:
        return SearchSpace.from_dict(data)
    except UserError as e:
        raise UserError(f"{name_or_path}: {e}") from None


def describe_genotype(g: Any) -> str:
    return g.describe()


class _ArchCache:
    """space.to_arch with the immutable parts reused: a LightHuBERT subnet's ArchSpec differs
    from the space's default only in width and layers, and LayerSpecs repeat, so the search
    skips rebuilding and re-validating them (tests check equality with space.to_arch)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.template = space.to_arch(space.default)
        self.layers: dict[tuple[int, int], LayerSpec] = {}

    def __call__(self, sub: Subnet) -> ArchSpec:
        hd = self.space.head_dim
        layers = []
        for h, f in zip(sub.heads, sub.ffn_dims):
            spec = self.layers.get((h, f))
            if spec is None:
                spec = self.layers[(h, f)] = LayerSpec(h, f, hd)
            layers.append(spec)
        return dataclasses.replace(self.template, embed_dim=sub.embed_dim, layers=tuple(layers),
                                   name=f"{self.space.name}[{sub.describe()}]")


# --------------------------------------------------------------------------- deployments


@dataclass(frozen=True)
class Deployment:
    """One (backend, dtype) configuration with its latency table."""

    backend: str
    dtype: str
    table: LatencyTable
    # Predictions times this, from measured winners (search_feedback); 1.0: the table as profiled.
    measured_factor: float = 1.0

    @property
    def threads(self) -> int:
        return self.table.provenance.threads

    @property
    def estimated(self) -> bool:
        return self.table.provenance.estimated

    @property
    def label(self) -> str:
        return f"{self.backend} {self.dtype}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "dtype": self.dtype, "threads": self.threads,
                "table": self.table.path, "method": self.table.provenance.method,
                "measured_factor": round(self.measured_factor, 4),
                "provenance": dataclasses.asdict(self.table.provenance), "describe": self.table.provenance.describe()}


def find_deployments(device: str, backend: str = "auto", dtype: str = "auto",
                     table_files: Sequence[str] = ()) -> list[Deployment]:
    """Latency tables to search over: the given files, or the best known table for every
    (backend, dtype) the device has (restricted to `backend` / `dtype` unless auto)."""
    from .latency import find_tables, load_table
    from .latency.table import BACKENDS, DTYPES

    backends = BACKENDS if backend == "auto" else (backend,)
    dtypes = DTYPES if dtype == "auto" else (dtype,)
    out: list[Deployment] = []
    if table_files:
        for path in table_files:
            t = load_table(path, device=device)
            p = t.provenance
            if p.backend in backends and p.dtype in dtypes:
                out.append(Deployment(p.backend, p.dtype, t))
        if not out:
            raise UserError(f"none of the --table files is a {'/'.join(backends)} {'/'.join(dtypes)} table for "
                            f"{device}; pass a matching table or change --backend / --dtype")
        return out
    for b in backends:
        for d in dtypes:
            found = find_tables(device, b, d)
            if found:
                out.append(Deployment(b, d, load_table(found[0].path, backend=b, dtype=d, device=device)))
    if not out:
        have = ", ".join(sorted({f"{i.provenance.backend} {i.provenance.dtype}" for i in find_tables(device)})) or "none"
        want = f"{backend if backend != 'auto' else 'any backend'} {dtype if dtype != 'auto' else 'any dtype'}"
        raise UserError(f"no latency table for {device} ({want}; tables for {device}: {have}); measure one with "
                        f"`edgekit profile --device {device} --backend executorch` or pass --table FILE")
    return out


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One evaluated architecture. predicted_ms / deployment: the fastest deployment meeting the
    size limits (the one it would ship with); latency_ms: every deployment's prediction."""

    index: int
    genotype: Any  # Subnet | Student | None (a --candidates model)
    arch: ArchSpec
    source: str  # "space" or the --candidates path / preset
    params: int
    latency_ms: tuple[float, ...]
    deployment: int
    predicted_ms: float
    size_mb: float
    feasible: bool
    violation: float  # 0 when feasible; else the summed relative excess over each limit
    quality: float | None = None
    model: Any = field(default=None, repr=False)  # weights of a --candidates entry
    _macs: int | None = field(default=None, repr=False)

    def macs(self, seconds: float) -> int:
        """MACs for `seconds` of input (computed on demand: the search loop never needs them)."""
        if self._macs is None:
            self._macs = self.arch.mac_count(seconds)
        return self._macs

    def summary(self) -> str:
        return self.genotype.describe() if self.genotype is not None else (self.arch.name or self.source)

    def to_dict(self, deployments: Sequence[Deployment], seconds: float) -> dict:
        dep = deployments[self.deployment]
        return {"index": self.index, "source": self.source, "summary": self.summary(),
                "genotype": self.genotype.to_dict() if self.genotype is not None else None,
                "params": self.params, "macs": self.macs(seconds), "predicted_ms": round(self.predicted_ms, 4),
                "backend": dep.backend, "dtype": dep.dtype, "table_method": dep.table.provenance.method,
                "latency_ms": {d.label: round(ms, 4) for d, ms in zip(deployments, self.latency_ms)},
                "size_mb": round(self.size_mb, 3), "feasible": self.feasible,
                "violation": round(self.violation, 4), "quality": self.quality}


@dataclass(frozen=True)
class Limits:
    max_ms: float
    max_params: float | None = None  # parameters (not millions)
    max_mb: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.max_ms, (int, float)) and self.max_ms > 0 and math.isfinite(self.max_ms)):
            raise UserError(f"--max-ms {self.max_ms}: expected a positive latency budget in milliseconds")
        for name in ("max_params", "max_mb"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise UserError(f"--{name.replace('_', '-')} {v}: expected a positive number")


class FastCost:
    """Predictor.predict_ms and the parameter count, decomposed for the search's inner loop.

    A model's blocks split into a prefix (frontend, projection, positional conv) that depends
    only on (frontend, width, norms), then per layer an attention and an FFN block that depend
    only on (width, heads, FFN, frames), then time reduction / upsampling / a final norm. Each
    part is priced once through the real predictor (and counted once through arch.blocks) and
    memoised, so a new architecture costs a few dictionary look-ups instead of a full
    signature list. tests/test_search.py checks it equals Predictor.predict_ms and
    ArchSpec.param_count exactly on random architectures of every space.
    """

    def __init__(self, predictors: Sequence[Predictor], seconds: float):
        self.predictors = list(predictors)
        self.seconds = seconds
        self.samples = int(round(seconds * SAMPLE_RATE))
        self._fe: dict[int, tuple[Any, tuple]] = {}
        self._fe_by_value: dict[Any, tuple] = {}
        self._mid: dict[tuple, tuple[tuple[float, ...], int, int]] = {}
        self._blocks: dict[tuple, tuple[float, ...]] = {}
        self._layer: dict[tuple, tuple[tuple[float, ...], int]] = {}
        self._layer_params: dict[tuple, int] = {}
        self._tr_params: dict[tuple, int] = {}

    def _ms(self, sig: BlockSig) -> tuple[float, ...]:
        k = (sig.kind, sig.dims)
        hit = self._blocks.get(k)
        if hit is None:
            hit = self._blocks[k] = tuple(p.block_ms(sig)[0] for p in self.predictors)
        return hit

    def _ms_each(self, sigs: Sequence[BlockSig]) -> tuple[float, ...]:
        """ms per predictor, where predictor j prices sigs[j]: the block as its backend's
        export deploys it (widths padded, widths.py)."""
        return tuple(p.block_ms(sig)[0] for p, sig in zip(self.predictors, sigs))

    def _frontend_of(self, fe: Any) -> tuple[tuple[float, ...], int, int, int]:
        """(ms per predictor, blocks, params) of a frontend. Waveform extractors are priced per
        conv layer (the search varies each layer's width, so whole-frontend keys rarely repeat);
        the signature and parameter rules are those of signature.block_signatures / arch.blocks."""
        # Keyed by identity (spaces reuse their frontend objects; hashing a 7-layer frontend
        # every call costs more than pricing it). The entry keeps the object alive, so its id
        # cannot be reused by another frontend.
        hit = self._fe.get(id(fe))
        if hit is not None:
            return hit[1]
        hit = self._fe_by_value.get(fe)
        if hit is not None:
            self._fe[id(fe)] = (fe, hit)
            return hit
        if isinstance(fe, WaveformFrontend):
            totals = [0.0] * len(self.predictors)
            n, c_in, params = self.samples, 1, 0
            # Each predictor prices the widths its backend's export runs (widths.py).
            deployed = [padded_conv_widths(fe, p.pad_multiple) for p in self.predictors]
            for i, layer in enumerate(fe.layers):
                normed = fe.norm == "layer" or (fe.norm == "group" and i == 0)
                code = NORM_CODES[fe.norm] if normed else 0
                ms = self._ms_each([BlockSig("", "conv", (w[i][0], w[i][1], layer.kernel, layer.stride, 0, n, code,
                                                          int(fe.conv_bias), 0)) for w in deployed])
                for j, v in enumerate(ms):
                    totals[j] += v
                params += c_in * layer.channels * layer.kernel + (layer.channels if fe.conv_bias else 0)
                params += 2 * layer.channels if normed else 0
                n = conv_out_len(n, layer.kernel, layer.stride)
                c_in = layer.channels
            hit = (tuple(totals), len(fe.layers), params, n)
        else:
            probe = ArchSpec(frontend=fe, embed_dim=16, layers=(LayerSpec(1, 1, 16),), pos_conv=None)
            sigs = [s for s in block_signatures(probe, self.seconds) if s.name.startswith("frontend.")]
            ms = [self._ms(s) for s in sigs]
            hit = (tuple(sum(m[j] for m in ms) for j in range(len(self.predictors))), len(sigs),
                   sum(b.params for b in blocks(probe, self.seconds) if b.name.startswith("frontend.")),
                   fe.num_frames(self.samples))
        self._fe_by_value[fe] = hit
        self._fe[id(fe)] = (fe, hit)
        return hit

    def _prefix_of(self, spec: ArchSpec) -> tuple[tuple[float, ...], int, int, int]:
        """(ms, blocks, params, frames) of the frontend, projection and positional conv (or the
        post-LN encoder norm)."""
        fe = spec.frontend
        fe_ms, fe_n, fe_params, t0 = self._frontend_of(fe)
        key = (fe.out_dim, t0, spec.embed_dim, spec.feature_layer_norm, spec.pos_conv,
               spec.layer_norm_first, spec.mask_emb)
        hit = self._mid.get(key)
        if hit is None:
            probe = spec.replace(layers=spec.layers[:1], time_reduction=None, heads=None)
            names = ("projection", "pos_conv", "encoder_norm")
            sigs = [s for s in block_signatures(probe, self.seconds) if s.name in names]
            ms = [self._ms(s) for s in sigs]
            hit = self._mid[key] = (tuple(sum(m[j] for m in ms) for j in range(len(self.predictors))), len(sigs),
                                    sum(b.params for b in blocks(probe, self.seconds) if b.name in names))
        return tuple(a + b for a, b in zip(fe_ms, hit[0])), fe_n + hit[1], fe_params + hit[2], t0

    def evaluate(self, spec: ArchSpec) -> tuple[tuple[float, ...], int]:
        """(predicted ms per predictor, parameters) of one architecture."""
        prefix = self._prefix_of(spec)
        return self.latency(spec, prefix), self.params(spec, prefix)

    def latency(self, spec: ArchSpec, prefix: tuple | None = None) -> tuple[float, ...]:
        """Predicted whole-model ms per predictor (== Predictor.predict_ms)."""
        prefix_ms, n_blocks, _, t0 = prefix or self._prefix_of(spec)
        totals = list(prefix_ms)
        e, post = spec.embed_dim, 0 if spec.layer_norm_first else 1
        frames = spec.layer_frames(self.samples) if spec.time_reduction is not None else None
        tr = spec.time_reduction
        n_pred = len(totals)
        t_prev = t0
        for i, layer in enumerate(spec.layers):
            if tr is not None and i == tr.before_layer:
                self._add(totals, self._ms(make("time_reduction", "time_reduction", e=e, k=tr.kernel, f=tr.factor,
                                                t=t_prev)))
                n_blocks += 1
            t = frames[i] if frames is not None else t0
            key = (e, layer.heads, layer.head_dim, layer.ffn_dim, t, post)
            hit = self._layer.get(key)
            if hit is None:
                # Same rule as signature.block_signatures: a pruned block keeps its post-LN norm.
                # The FFN is priced at the hidden width each backend's export pads it to.
                ms = []
                if layer.heads > 0 or post:
                    ms.append(self._ms(BlockSig("", "attention", (e, layer.heads, layer.head_dim, t, 1 - post))))
                if layer.ffn_dim > 0 or post:
                    ms.append(self._ms_each([BlockSig("", "ffn", (e, padded_ffn(layer.ffn_dim, p.pad_multiple),
                                                                   t, 1 - post)) for p in self.predictors]))
                hit = self._layer[key] = (tuple(sum(m[j] for m in ms) for j in range(n_pred)), len(ms))
            layer_ms = hit[0]
            for j in range(n_pred):
                totals[j] += layer_ms[j]
            n_blocks += hit[1]
            t_prev = t
        if not post:
            self._add(totals, self._ms(make("encoder_norm", "norm", e=e, t=t_prev)))
            n_blocks += 1
        if tr is not None and tr.upsample:
            self._add(totals, self._ms(make("upsample", "upsample", e=e, f=tr.factor, t=t_prev, frames=t0)))
            n_blocks += 1
        return tuple(p.table.correction.apply(tot, n_blocks) for p, tot in zip(self.predictors, totals))

    @staticmethod
    def _add(totals: list[float], ms: tuple[float, ...]) -> None:
        for j, v in enumerate(ms):
            totals[j] += v

    def params(self, spec: ArchSpec, prefix: tuple | None = None) -> int:
        """Encoder parameters without training heads (== ArchSpec.param_count(False))."""
        total = (prefix or self._prefix_of(spec))[2]
        e = spec.embed_dim
        for layer in spec.layers:
            key = (e, layer.heads, layer.head_dim, layer.ffn_dim)
            p = self._layer_params.get(key)
            if p is None:
                probe = spec.replace(layers=(layer,), time_reduction=None, heads=None)
                p = self._layer_params[key] = sum(b.params for b in blocks(probe, self.seconds)
                                                  if b.name.startswith("layer0."))
            total += p
        tr = spec.time_reduction
        if tr is not None:
            key = (e, tr.kernel, tr.factor, tr.upsample)
            p = self._tr_params.get(key)
            if p is None:
                probe = spec.replace(layers=spec.layers[:1], time_reduction=TimeReduction(0, tr.factor, tr.kernel,
                                                                                           tr.upsample), heads=None)
                p = self._tr_params[key] = sum(b.params for b in blocks(probe, self.seconds)
                                               if b.name in ("time_reduction", "upsample"))
            total += p
        return total


class Evaluator:
    """Genotype or ArchSpec -> Candidate, memoised. Counts every evaluation asked for."""

    def __init__(self, space: Space, deployments: Sequence[Deployment], limits: Limits, seconds: float = 1.0):
        if not deployments:
            raise RuntimeError("internal error: Evaluator without deployments")
        self.space = space
        self.to_arch = _ArchCache(space) if isinstance(space, SearchSpace) else space.to_arch
        self.deployments = list(deployments)
        self.predictors = [Predictor(d.table) for d in self.deployments]
        self.cost = FastCost(self.predictors, seconds)
        self.limits = limits
        self.seconds = seconds
        self.evaluations = 0
        self.history: list[Candidate] = []
        self._memo: dict[Any, Candidate] = {}

    def evaluate(self, g: Any) -> Candidate:
        self.evaluations += 1
        hit = self._memo.get(g)
        if hit is not None:
            return hit
        c = self._price(g, self.to_arch(g), "space")
        self._memo[g] = c
        return c

    def add_model(self, spec: ArchSpec, source: str, model: Any = None) -> Candidate:
        """An already-built model (a --candidates entry): priced the same way, outside the space."""
        c = self._price(None, spec.without_heads(), source)
        c.model = model
        return c

    def _price(self, g: Any, spec: ArchSpec, source: str) -> Candidate:
        lat, params = self.cost.evaluate(spec)
        lim = self.limits
        best_i, best_ms, best_viol = 0, math.inf, math.inf
        for i, (d, ms) in enumerate(zip(self.deployments, lat)):
            size = params * BYTES_PER_PARAM[d.dtype] / 1e6
            viol = max(0.0, ms / lim.max_ms - 1.0)
            if lim.max_mb is not None:
                viol += max(0.0, size / lim.max_mb - 1.0)
            if lim.max_params is not None:
                viol += max(0.0, params / lim.max_params - 1.0)
            # Feasible first, then fastest: the deployment it would ship with.
            if (viol, ms) < (best_viol, best_ms):
                best_i, best_ms, best_viol = i, ms, viol
        dtype = self.deployments[best_i].dtype
        c = Candidate(len(self.history), g, spec, source, params, lat, best_i, best_ms,
                      params * BYTES_PER_PARAM[dtype] / 1e6, best_viol == 0.0, best_viol)
        self.history.append(c)
        return c


# --------------------------------------------------------------------------- algorithms


@dataclass(frozen=True)
class SearchSettings:
    algorithm: str = "evolution+nsga2"
    budget_evals: int = 2000
    seed: int = 0
    population: int = 40
    parents: int = 10
    mutation_prob: float = 0.2
    crossover_share: float = 0.5  # of each generation's children

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"--algorithm {self.algorithm!r} is unknown; expected one of {', '.join(ALGORITHMS)}")
        if self.budget_evals < 10:
            raise UserError(f"--budget-evals {self.budget_evals}: expected at least 10 evaluations")
        if self.population < 4 or not 2 <= self.parents <= self.population:
            raise UserError(f"population {self.population} / parents {self.parents}: expected population >= 4 "
                            "and 2 <= parents <= population")
        if not 0 < self.mutation_prob <= 1:
            raise UserError(f"mutation probability {self.mutation_prob}: expected 0 < p <= 1")


class _Run:
    """Shared plumbing of one algorithm run: evaluation budget, quality, progress."""

    def __init__(self, ev: Evaluator, objective: Any, budget: int, rng: random.Random,
                 progress: Progress | None, done_before: int, total: int):
        self.ev, self.obj, self.budget, self.rng = ev, objective, budget, rng
        self.start = ev.evaluations
        self.progress, self.done_before, self.total = progress, done_before, total

    @property
    def left(self) -> int:
        return self.budget - (self.ev.evaluations - self.start)

    def evaluate(self, g: Any) -> Candidate:
        c = self.ev.evaluate(g)
        if self.progress is not None and (self.ev.evaluations - self.start) % 25 == 0:
            self.progress(self.done_before + self.ev.evaluations - self.start, self.total)
        return c

    def score(self, cands: Sequence[Candidate]) -> None:
        """Quality of the feasible ones (the expensive objective is never run over budget)."""
        todo = [c for c in cands if c.feasible and c.quality is None]
        if todo:
            self.obj.evaluate(todo)

    def cost(self, c: Candidate) -> float:
        return self.obj.cost(c.quality) if c.quality is not None else math.inf


def random_search(run: _Run, space: Space) -> None:
    batch: list[Candidate] = []
    while run.left > 0:
        batch.append(run.evaluate(space.sample(run.rng)))
        if len(batch) >= 50:
            run.score(batch)
            batch = []
    run.score(batch)


def _unique(cands: Sequence[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in cands:
        if id(c) not in seen:
            seen.add(id(c))
            out.append(c)
    return out


def evolution(run: _Run, space: Space, s: SearchSettings) -> None:
    """HAT-style constrained evolution: the best `parents` of the population breed `population -
    parents` children per generation by mutation and crossover; a child over the budget is
    rejected and bred again (each try costs an evaluation)."""
    rng = run.rng
    # The extremes start the population: under a tight budget the smallest is often the only
    # feasible start, under a loose one the largest is often the answer.
    pop = [c for c in (run.evaluate(space.smallest()), run.evaluate(space.largest())) if c.feasible]
    tries = 0
    while len(pop) < s.population and run.left > 0 and tries < 20 * s.population:
        tries += 1
        c = run.evaluate(space.sample(rng))
        if c.feasible:
            pop.append(c)
    pop = _unique(pop)
    run.score(pop)
    if not pop:
        return
    n_children = s.population - s.parents
    n_cross = int(round(n_children * s.crossover_share))
    while run.left > 0:
        pop.sort(key=lambda c: (run.cost(c), c.predicted_ms))
        parents = pop[: s.parents]
        children: list[Candidate] = []
        for i in range(n_children):
            for _ in range(10):  # rejection: breed again when the child is over budget
                if run.left <= 0:
                    break
                if i < n_cross and len(parents) > 1:
                    a, b = rng.sample(parents, 2)
                    g = space.crossover(a.genotype, b.genotype, rng)
                else:
                    g = space.mutate(rng.choice(parents).genotype, rng, s.mutation_prob)
                c = run.evaluate(g)
                if c.feasible:
                    children.append(c)
                    break
        run.score(children)
        pop = _unique(parents + children)


def _domination_matrix(cands: Sequence[Candidate], objs: Sequence[tuple]) -> np.ndarray:
    """D[i, j] = candidate i constrained-dominates j (Deb's rule: a feasible one beats an
    infeasible one; of two infeasible ones the smaller violation wins; of two feasible ones
    Pareto dominance on the objectives)."""
    f = np.array(objs, dtype=float)
    feas = np.array([c.feasible for c in cands])
    viol = np.array([c.violation for c in cands])
    le = (f[:, None, :] <= f[None, :, :]).all(-1)
    lt = (f[:, None, :] < f[None, :, :]).any(-1)
    pareto = le & lt
    both_feas = feas[:, None] & feas[None, :]
    both_infeas = ~feas[:, None] & ~feas[None, :]
    return (both_feas & pareto) | (feas[:, None] & ~feas[None, :]) | (both_infeas & (viol[:, None] < viol[None, :]))


def nondominated_fronts(cands: Sequence[Candidate], objs: Sequence[tuple]) -> list[list[int]]:
    """Fast non-dominated sort (Deb et al. 2002) under constrained domination."""
    if not cands:
        return []
    dom = _domination_matrix(cands, objs)
    count = dom.sum(axis=0)
    fronts: list[list[int]] = []
    current = [int(i) for i in np.flatnonzero(count == 0)]
    while current:
        fronts.append(current)
        count = count - dom[current].sum(axis=0)
        count[current] = -1  # removed; nothing later dominates them, so they stay below 0
        current = [int(i) for i in np.flatnonzero(count == 0)]
    return fronts


def crowding(objs: Sequence[tuple], front: list[int]) -> dict[int, float]:
    dist = {i: 0.0 for i in front}
    for m in range(len(objs[front[0]])):
        order = sorted(front, key=lambda i: objs[i][m])
        lo, hi = objs[order[0]][m], objs[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi - lo <= 0 or not math.isfinite(hi - lo):
            continue
        for k in range(1, len(order) - 1):
            dist[order[k]] += (objs[order[k + 1]][m] - objs[order[k - 1]][m]) / (hi - lo)
    return dist


def nsga2(run: _Run, space: Space, s: SearchSettings) -> None:
    """NSGA-II over (predicted ms, quality cost) with the budget as a constraint."""
    rng = run.rng
    n = s.population
    pop = [run.evaluate(space.smallest()), run.evaluate(space.largest())]
    while len(pop) < n and run.left > 0:
        pop.append(run.evaluate(space.sample(rng)))
    pop = _unique(pop)
    run.score(pop)

    def objectives(cs: Sequence[Candidate]) -> list[tuple]:
        return [(c.predicted_ms, run.cost(c)) for c in cs]

    def rank_and_crowd(cs: list[Candidate]) -> tuple[list[int], list[float], list[list[int]]]:
        objs = objectives(cs)
        fronts = nondominated_fronts(cs, objs)
        rank, crowd = [0] * len(cs), [0.0] * len(cs)
        for r, f in enumerate(fronts):
            for i, d in crowding(objs, f).items():
                rank[i], crowd[i] = r, d
        return rank, crowd, fronts

    rank, crowd, _ = rank_and_crowd(pop)
    while run.left > 0 and pop:
        def tournament() -> Candidate:
            i, j = rng.randrange(len(pop)), rng.randrange(len(pop))
            return pop[i] if (rank[i], -crowd[i]) <= (rank[j], -crowd[j]) else pop[j]

        children = []
        for _ in range(n):
            if run.left <= 0:
                break
            a, b = tournament(), tournament()
            g = space.crossover(a.genotype, b.genotype, rng) if rng.random() < 0.9 else a.genotype
            children.append(run.evaluate(space.mutate(g, rng, s.mutation_prob)))
        run.score(children)
        merged = _unique(pop + children)
        rank_m, crowd_m, fronts = rank_and_crowd(merged)
        chosen: list[int] = []
        for f in fronts:
            if len(chosen) + len(f) <= n:
                chosen.extend(f)
            else:
                chosen.extend(sorted(f, key=lambda i: -crowd_m[i])[: n - len(chosen)])
                break
        pop = [merged[i] for i in chosen]
        rank = [rank_m[i] for i in chosen]
        crowd = [crowd_m[i] for i in chosen]


# --------------------------------------------------------------------------- result


@dataclass
class SearchResult:
    device: str
    space: str
    objective: Any
    deployments: list[Deployment]
    limits: Limits
    settings: SearchSettings
    seconds: float
    evaluated: list[Candidate]
    front: list[Candidate]
    best: Candidate | None
    fastest: Candidate | None
    evaluations: int
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        return any(d.estimated for d in self.deployments)

    def impossible_message(self) -> str:
        lim = self.limits
        if self.fastest is None:
            return f"no candidate could be evaluated in space {self.space}"
        f = self.fastest
        dep = self.deployments[f.deployment]
        limits = [f"--max-ms {lim.max_ms:g}"]
        relax = []
        if f.predicted_ms > lim.max_ms:
            relax.append(f"raise --max-ms to at least {math.ceil(f.predicted_ms * 100) / 100:g}")
        if lim.max_params is not None and f.params > lim.max_params:
            relax.append(f"raise --max-params above {f.params / 1e6:.2f}M")
        if lim.max_mb is not None and f.size_mb > lim.max_mb:
            relax.append(f"raise --max-mb above {f.size_mb:.2f}")
        if lim.max_params is not None:
            limits.append(f"--max-params {lim.max_params / 1e6:g}M")
        if lim.max_mb is not None:
            limits.append(f"--max-mb {lim.max_mb:g}")
        relax.append("shorten --seconds" if self.seconds > 0.5 else "try another device")
        if self.space.startswith("lighthubert") or self.space == "tiny-supernet":
            relax.append("or use --space student (it can shrink the conv frontend)")
        return (f"no candidate in space {self.space} meets {' '.join(limits)} on {self.device} after "
                f"{self.evaluations} evaluations: the fastest found, {f.summary()} ({dep.label}), is predicted "
                f"at {f.predicted_ms:.2f} ms with {f.params / 1e6:.2f}M params; {', '.join(relax)}")

    def to_dict(self) -> dict:
        deps = self.deployments
        best = self.best.to_dict(deps, self.seconds) if self.best is not None else None
        if best is not None:
            best["arch"] = self.best.arch.to_dict()
        return {
            "schema": SEARCH_SCHEMA, "device": self.device, "space": self.space, "seconds": self.seconds,
            "seed": self.settings.seed,
            "settings": {**dataclasses.asdict(self.settings), "max_ms": self.limits.max_ms,
                         "max_params": self.limits.max_params, "max_mb": self.limits.max_mb},
            "objective": {"kind": self.objective.kind, "measured": self.objective.measured,
                          "higher_is_better": self.objective.higher_is_better,
                          "description": self.objective.description},
            "quality_measured": self.objective.measured,
            "tables": [d.to_dict() for d in deps], "estimated_tables": self.estimated,
            "evaluations": self.evaluations, "unique_candidates": len(self.evaluated),
            "wall_s": round(self.wall_s, 3), "notes": self.notes,
            "best": best, "front": [c.to_dict(deps, self.seconds) for c in self.front],
            "fastest": self.fastest.to_dict(deps, self.seconds) if self.fastest is not None else None,
            "candidates": [c.to_dict(deps, self.seconds) for c in self.evaluated],
        }


def pareto_front(cands: Sequence[Candidate], objective: Any) -> list[Candidate]:
    """Feasible candidates not dominated on (predicted ms, quality cost), fastest first."""
    feas = [c for c in cands if c.feasible and c.quality is not None]
    feas.sort(key=lambda c: (c.predicted_ms, objective.cost(c.quality)))
    front, best_cost = [], math.inf
    for c in feas:
        cost = objective.cost(c.quality)
        if cost < best_cost:
            front.append(c)
            best_cost = cost
    return front


def run_search(space: Space, space_name: str, deployments: Sequence[Deployment], objective: Any, limits: Limits,
               settings: SearchSettings, device: str, seconds: float = 1.0,
               extra: Sequence[tuple[ArchSpec, str, Any]] = (), progress: Progress | None = None,
               notes: Sequence[str] = ()) -> SearchResult:
    """Search `space` under `limits`; `extra` = (spec, source, model) of --candidates entries."""
    t0 = time.perf_counter()
    ev = Evaluator(space, deployments, limits, seconds)
    budget = settings.budget_evals
    algos = settings.algorithm.split("+")
    shares = [budget // len(algos)] * len(algos)
    shares[-1] += budget - sum(shares)
    done = 0
    for k, (name, share) in enumerate(zip(algos, shares)):
        # One RNG stream per algorithm, all derived from the seed: reproducible and independent.
        run = _Run(ev, objective, share, random.Random(settings.seed * 1009 + k), progress, done, budget)
        if name == "random":
            random_search(run, space)
        elif name == "evolution":
            evolution(run, space, settings)
        else:
            nsga2(run, space, settings)
        done += share
    for spec, source, model in extra:
        c = ev.add_model(spec, source, model)
        if c.feasible:
            objective.evaluate([c])
    if progress is not None:
        progress(budget, budget)
    evaluated = ev.history
    front = pareto_front(evaluated, objective)
    feas = [c for c in evaluated if c.feasible and c.quality is not None]
    best = min(feas, key=lambda c: (objective.cost(c.quality), c.predicted_ms)) if feas else None
    fastest = min(evaluated, key=lambda c: (c.predicted_ms, c.violation)) if evaluated else None
    return SearchResult(device, space_name, objective, list(deployments), limits, settings, seconds, evaluated,
                        front, best, fastest, ev.evaluations, time.perf_counter() - t0, list(notes))


# --------------------------------------------------------------------------- space vs table


def fit_space_to_tables(space: Space, deployments: Sequence[Deployment], seconds: float) -> tuple[Space, list[str]]:
    """Leave out student-space choices a table cannot price (no filterbank or time-reduction
    blocks measured), saying so, rather than failing mid-search."""
    notes: list[str] = []
    if not isinstance(space, StudentSpace):
        return space, notes
    preds = [Predictor(d.table) for d in deployments]

    def priceable(s: Student) -> bool:
        spec = space.to_arch(s)
        try:
            for p in preds:
                p.predict_ms(spec, seconds)
        except ValueError:
            return False
        return True

    e = space.embed_dims[0]
    base = dict(conv_widths=(space.conv_widths[-1],) * 7, fbank_channels=0, time_reduction=1, embed_dim=e,
                heads=(space.heads[0],), ffn_dims=(space.ffn_dims_for(e)[0],))
    if space.filterbank and not priceable(Student(**{**base, "frontend": "filterbank", "conv_widths": (),
                                                     "fbank_channels": space.fbank_channels[0]})):
        space = space.without(filterbank=True)
        notes.append("the latency table has no filterbank blocks: the filterbank frontend was left out "
                     "(profile a grid with filterbank=true to search it)")
    if max(space.time_reduction) > 1 and not priceable(Student(**{**base, "frontend": "waveform",
                                                                  "time_reduction": max(space.time_reduction)})):
        space = space.without(time_reduction=True)
        notes.append("the latency table has no time-reduction blocks: time reduction was left out "
                     "(profile them to search it)")
    return space, notes


# --------------------------------------------------------------------------- outputs


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_pareto(result: SearchResult, path: Path) -> None:
    """Quality against predicted latency: every feasible candidate, the front, the budget line
    and the chosen point (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obj = result.objective
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    pts = [c for c in result.evaluated if c.quality is not None]
    if pts:
        ax.scatter([c.predicted_ms for c in pts], [c.quality for c in pts], s=6, c="#bbbbbb", label="evaluated")
    if result.front:
        ax.plot([c.predicted_ms for c in result.front], [c.quality for c in result.front], "o-", c="#1f77b4",
                ms=4, label="Pareto front")
    ax.axvline(result.limits.max_ms, color="#d62728", ls="--", label=f"budget {result.limits.max_ms:g} ms")
    if result.best is not None:
        ax.scatter([result.best.predicted_ms], [result.best.quality], s=120, marker="*", c="#ff7f0e", zorder=5,
                   label="chosen")
    est = " (ESTIMATED table)" if result.estimated else ""
    ax.set_xlabel(f"predicted latency on {result.device}, ms{est}")
    ax.set_ylabel(obj.label + ("" if obj.measured else " - not measured quality"))
    ax.set_title(f"edgekit search: {result.space}, {result.seconds:g} s input")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def write_outputs(result: SearchResult, out_dir: str | os.PathLike, extra: dict | None = None) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    data = result.to_dict()
    if extra:
        data.update(extra)
    _atomic_write(out / "search.json", (json.dumps(data, indent=1) + "\n").encode())
    written["search.json"] = str(out / "search.json")
    if result.best is not None:
        _atomic_write(out / "best_arch.json", (result.best.arch.to_json() + "\n").encode())
        written["best_arch.json"] = str(out / "best_arch.json")
    plot_pareto(result, out / "pareto.png")
    written["pareto.png"] = str(out / "pareto.png")
    return written


__all__ = ["ALGORITHMS", "Candidate", "Deployment", "Evaluator", "Limits", "SEARCH_SCHEMA", "SearchResult",
           "SearchSettings", "describe_genotype", "evolution", "find_deployments", "fit_space_to_tables",
           "nondominated_fronts", "nsga2", "pareto_front", "plot_pareto", "random_search", "resolve_space",
           "run_search", "write_outputs"]
