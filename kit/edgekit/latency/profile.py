"""Profiling: measure a grid of blocks and a few whole models on a device, write a table.

Measurement is a callable `measure(module, example) -> stats` (anything with median_ms,
p10_ms, p90_ms, n), so the logic here (cache, resume, correction fit, validation) does not
depend on how a number is obtained. `runtime_measure()` is the real one: it lowers the module
with the export pipeline (the same prepare/quantize steps as a whole model) and times the
artifact in the real runtime on the device's connection.

Block measurements are cached by signature in an append-only journal (one JSON line per
block, fsynced): an interrupted profile resumes where it stopped, and a second grid reuses
every block the first one measured. A torn last line (killed mid-write) is ignored.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Iterable

import numpy as np

from ..arch import ArchSpec
from ..errors import UserError
from .grid import ProfileGrid
from .lowering import LoweringPool, lower_one
from .predict import Predictor, disagreement
from .signature import BlockSig, make
from .table import Correction, Entry, LatencyTable, Provenance, data_dir

MeasureFn = Callable[[Any, Any], Any]  # (nn.Module, example tensor) -> stats with median_ms, p10_ms, p90_ms, n
ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


def to_entry(stats: Any) -> Entry:
    """TimingStats (or any object/dict with median_ms, p10_ms, p90_ms, n) -> Entry."""
    get = stats.get if isinstance(stats, dict) else (lambda k: getattr(stats, k))
    med, p10, p90 = float(get("median_ms")), float(get("p10_ms")), float(get("p90_ms"))
    return Entry.ordered(med, p10, p90, int(get("n")))


# --------------------------------------------------------------------------- cache


class MeasurementCache:
    """Append-only journal of measurements for one device/backend/dtype/threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._entries: dict[str, Entry] = {}
        self._probes: dict[str, float] = {}  # speed probe median during each entry's passes
        self._passes: dict[str, list[float]] = {}  # each pass's median, as timed (interleaved jobs)
        # The probe speed every paired timing in this journal is brought to (RuntimeMeasure.bind).
        self.probe_reference_ms: float | None = None
        self._torn = False
        if self.path.exists():
            text = self.path.read_text()
            # A torn last line must not swallow the next record: start a fresh line first.
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                    if "probe_reference_ms" in rec:
                        self.probe_reference_ms = float(rec["probe_reference_ms"])
                        continue
                    self._entries[rec["key"]] = Entry(**rec["entry"])
                    if rec.get("probe_ms"):
                        self._probes[rec["key"]] = float(rec["probe_ms"])
                    else:
                        self._probes.pop(rec["key"], None)
                    if rec.get("passes_ms"):
                        self._passes[rec["key"]] = [float(v) for v in rec["passes_ms"]]
                    else:
                        self._passes.pop(rec["key"], None)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from an interrupted write

    @classmethod
    def for_config(cls, device: str, backend: str, dtype: str, threads: int, root: Path | None = None) -> "MeasurementCache":
        from ..export.report import REWRITES_REVISION
        from ..runtime import TIMING_REVISION

        root = root or (data_dir() / "cache")
        # One journal per export-rewrite revision (what a block costs depends on what it lowers
        # to) and per timing revision of the runner. Revision-1 journals predate the timing suffix.
        rt = TIMING_REVISION.get(backend, 1)
        timing = f"-rt{rt}" if rt > 1 else ""
        return cls(root / f"{device}-{backend}-{dtype}-t{threads}-rw{REWRITES_REVISION}{timing}.jsonl")

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def probe(self, key: str) -> float | None:
        """The speed probe's median while `key` was timed (None: measured without a probe)."""
        return self._probes.get(key)

    def passes(self, key: str) -> list[float] | None:
        """Each timing pass's median for `key`, before any speed rescaling (None: one pass)."""
        return self._passes.get(key)

    def set_probe_reference(self, ms: float) -> None:
        """Record the probe speed this journal's paired timings are brought to (once: the
        entries already in it were timed against it)."""
        if self.probe_reference_ms is not None:
            raise ValueError(f"{self.path}: its probe reference is already {self.probe_reference_ms} ms")
        if not ms > 0:
            raise ValueError(f"probe reference {ms} ms: expected a positive time")
        self._append({"probe_reference_ms": round(ms, 6)})
        self.probe_reference_ms = round(ms, 6)

    def _append(self, rec: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec) + "\n"
        if self._torn:
            line, self._torn = "\n" + line, False
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def put(self, key: str, entry: Entry, probe_ms: float | None = None,
            passes_ms: list[float] | None = None) -> None:
        rec: dict[str, Any] = {"key": key, "entry": entry.to_dict()}
        if probe_ms:
            rec["probe_ms"] = round(probe_ms, 6)
        if passes_ms:
            rec["passes_ms"] = [round(v, 6) for v in passes_ms]
        self._append(rec)
        self._entries[key] = entry
        if passes_ms:
            self._passes[key] = rec["passes_ms"]
        else:
            self._passes.pop(key, None)
        if probe_ms:
            self._probes[key] = probe_ms
        else:
            self._probes.pop(key, None)


def model_key(spec: ArchSpec, seconds: float) -> str:
    """Cache key of a whole model: a hash of its ArchSpec JSON (names excluded) and length."""
    d = spec.replace(name="").to_dict()
    h = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    return f"model:{h},s={seconds:g}"


# --------------------------------------------------------------------------- measuring


# Interleaved timing passes per whole model (anchors, held-out models). On the shared 2-core
# hosts one pass of a whole model strays 10-12% (pooled sd, pass_spread) from the model's own
# level; the median of 3 passes then strays about 7-8%, and a perfect predictor would land within
# +-10% of only 80-87% of such medians, under the 95% goal. The median of 9 strays 3.5-5.5%
# (92-100% within +-10%, measured on the four host tables, 2026-12-07). Blocks keep
# BLOCK_ROUNDS: a block off its group is timed again anyway (recheck_outliers), and a table
# has 80-130 of them.
MODEL_ROUNDS = 9
BLOCK_ROUNDS = 3
BLOCK_ORDER_SEED = 0


def measure_blocks(sigs: Iterable[BlockSig], measure: MeasureFn, cache: MeasurementCache,
                   progress: ProgressFn | None = None, rounds: int = 1, chunk: int = 16) -> dict[str, Entry]:
    """Measure every signature not yet in the cache; returns all of them from the cache.

    With `rounds` > 1 (and a two-phase measure) blocks are lowered `chunk` at a time and each
    chunk is timed in interleaved passes, like whole models (measure_models): a block's
    median then spans about a minute of the machine's drift instead of one second of it.

    Blocks are measured in a fixed shuffled order (BLOCK_ORDER_SEED), not the grid's."""
    sigs = list({s.key: s for s in sigs}.values())
    # Chunks are timed minutes apart and only the probe links their speeds. In the grid's
    # order one chunk held one width's blocks, so a misread chunk shifted a whole interpolation
    # group: on the Intel host (ONNX int8, 2026-12-07) the table's FFN at E=768, F=3072 sat
    # 0.89x a fresh timing while E=512, F=2048 sat 1.31x (benchmarks/block_context.py), and
    # every 768-wide model was predicted 4-14% low. Shuffled, a chunk's error lands on blocks
    # of many groups, where the neighbours' fit averages it.
    order = list(sigs)
    random.Random(BLOCK_ORDER_SEED).shuffle(order)
    jobs = [(s.key, BlockJob(s)) for s in order]
    _measure_jobs(jobs, measure, cache, progress, "blocks", rounds, chunk)
    return {s.key: cache.get(s.key) for s in sigs}


def _interleaves(measure: MeasureFn, rounds: int) -> bool:
    return rounds > 1 and hasattr(measure, "lower") and hasattr(measure, "time")


def _measure_jobs(jobs: list[tuple[str, Callable[[], tuple[Any, Any]]]], measure: MeasureFn,
                  cache: MeasurementCache, progress: ProgressFn | None, what: str, rounds: int,
                  chunk: int) -> None:
    """Measure each (cache key, build) job whose key is not cached, and cache it.

    One pass per job with a plain measure; with an interleaving one (see _interleaves), jobs
    are lowered `chunk` at a time and each chunk is timed in `rounds` round-robin passes (a
    reload each), the entry being the median of the passes (combine_passes)."""
    todo = [(k, build) for k, build in jobs if k not in cache]
    bind = getattr(measure, "bind", None)
    if todo and bind is not None:
        bind(cache)
    if not _interleaves(measure, rounds):
        done = len(jobs) - len(todo)
        if progress:
            progress(what, done, len(jobs))
        for key, build in todo:
            module, example = build()
            cache.put(key, to_entry(measure(module, example)))
            done += 1
            if progress:
                progress(what, done, len(jobs))
        return
    total = len(jobs) * rounds
    done = total - len(todo) * rounds
    if progress:
        progress(what, done, total)
    for start in range(0, len(todo), max(chunk, 1)):
        part = todo[start:start + max(chunk, 1)]
        paths: list[str] = []
        try:
            names = [f"{what.split()[0]}{i}" for i in range(len(part))]
            if hasattr(measure, "lower_many"):
                paths = measure.lower_many([(build, name) for (_key, build), name in zip(part, names)])
            else:
                for (_key, build), name in zip(part, names):
                    module, example = build()
                    paths.append(measure.lower(module, example, name))
            passes: list[list[Any]] = [[] for _ in part]
            probes: list[float] = []
            for _ in range(rounds):
                if hasattr(measure, "probe"):
                    probes.append(measure.probe())
                for i, path in enumerate(paths):
                    passes[i].append(measure.time(path))
                    done += 1
                    if progress:
                        progress(what, done, total)
        finally:
            for path in paths:
                Path(path).unlink(missing_ok=True)
        # The raw pass medians are kept: how far they spread is the timing noise a prediction
        # is judged against (validate reports it).
        medians = [[to_entry(p).median_ms for p in got] for got in passes]
        factors = pass_factors(medians, probes)
        for (key, _build), got, each in zip(part, passes, medians):
            cache.put(key, combine_passes(got, factors), probe_ms=float(np.median(probes)) if probes else None,
                      passes_ms=each)


@dataclass(frozen=True)
class BlockJob:
    """Builds one block's module and example (picklable: lowering may run in a worker)."""

    sig: BlockSig

    def __call__(self) -> tuple[Any, Any]:
        from .modules import build_block_module

        return build_block_module(self.sig)


@dataclass(frozen=True)
class ModelJob:
    """Builds one whole model's module and example (picklable, like BlockJob)."""

    spec: ArchSpec
    seconds: float

    def __call__(self) -> tuple[Any, Any]:
        return whole_model_module(self.spec, self.seconds)


class _LastHidden:
    """Wrap a SpeechEncoder so it maps one tensor to one tensor (the export contract)."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class LastHidden(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module):
                super().__init__()
                self.inner = inner

            def forward(self, wave: torch.Tensor) -> torch.Tensor:
                return self.inner(wave).last_hidden_state

        return LastHidden(model).eval()


def whole_model_module(spec: ArchSpec, seconds: float, seed: int = 0) -> tuple[Any, Any]:
    import torch

    from ..models import build_model

    samples = int(round(seconds * 16_000))
    # Weights and example both seeded: an int8 model is calibrated on its example, and the
    # same spec must lower to the same artifact in any process (lowering.py).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(spec.without_heads()).prepare_for_export()
        example = torch.randn(1, samples) * 0.1
    return _LastHidden(model), example


def measure_models(specs: list[ArchSpec], seconds: float, measure: MeasureFn, cache: MeasurementCache,
                   progress: ProgressFn | None = None, what: str = "models", rounds: int = 1,
                   speed: float | None = None, tag: str = "") -> list[Entry]:
    """Whole-model medians, cached by model_key.

    With `rounds` > 1 and a measure that can lower and time separately (RuntimeMeasure), every
    uncached model is lowered once, then timed in `rounds` interleaved passes (a reload each
    time) and the entry is the median of the pass medians. On a shared machine the speed drifts
    by 10-20% over tens of seconds (a hubert-sized model measured 124, 101, 96 and 107 ms in
    four passes a minute apart); one pass samples one moment of that drift, several spread
    over minutes sample its middle. With `speed` (a speed probe median, see RuntimeMeasure)
    entries come back rescaled to that speed. `tag` is appended to every cache key: models
    timed as one batch (a validation and its speed references) are cached apart from the same
    models timed in another batch.
    """
    keys = [k + tag for k in _model_keys(specs, seconds, measure, rounds)]
    jobs = [(k, ModelJob(spec, seconds)) for k, spec in zip(keys, specs)]
    _measure_jobs(jobs, measure, cache, progress, what, rounds, chunk=len(jobs))
    scaled = to_speed({k: cache.get(k) for k in keys}, cache, speed)
    return [scaled[k] for k in keys]


def _model_keys(specs: list[ArchSpec], seconds: float, measure: MeasureFn, rounds: int) -> list[str]:
    # A median of passes is a different estimate than one pass: keyed apart, so changing
    # --rounds measures again instead of mixing the two.
    suffix = f",r={rounds}" if _interleaves(measure, rounds) else ""
    return [model_key(spec, seconds) + suffix for spec in specs]


def combine_passes(passes: list[Any], factors: list[float] | None = None) -> Entry:
    """One entry from several timing passes of one artifact: medians of the pass medians and
    percentiles, runs summed. With `factors` (pass_factors) each pass is first multiplied by
    its factor, which brings it to the speed of the chunk's typical pass."""
    es = [to_entry(p) for p in passes]
    f = factors or [1.0] * len(es)
    med = float(np.median([e.median_ms * k for e, k in zip(es, f)]))
    p10 = float(np.median([e.p10_ms * k for e, k in zip(es, f)]))
    p90 = float(np.median([e.p90_ms * k for e, k in zip(es, f)]))
    return Entry.ordered(med, p10, p90, sum(e.n for e in es))


# A chunk with at least this many artifacts reads the speed of each of its passes off the
# artifacts themselves (pass_factors); a smaller one off the speed probe.
MIN_JOBS_FOR_PASS_SPEED = 4


def pass_factors(medians: list[list[float]], probes: list[float] | None = None) -> list[float] | None:
    """Per timing pass of one chunk, the factor that brings that pass to the chunk's typical
    speed; None when there is nothing to correct (one pass, or a small chunk without probes).

    `medians` holds, per artifact, its median in each pass. A pass during which the machine runs
    slower slows every artifact timed in it: on the Intel host a 5-model batch had one pass at
    1.18x the others for every model, and removing that common part halved the pooled pass-to-
    pass spread (8.3% -> 4.3%). Per pass, the median over the artifacts of (its time in that
    pass / its median over the passes) measures that directly, on the same kernels, where the
    probe (one small FFN block timed before the pass) reads it second-hand. A chunk of fewer than
    MIN_JOBS_FOR_PASS_SPEED artifacts falls back on the probes (speed_factor)."""
    rounds = min((len(m) for m in medians), default=0)
    if rounds < 2:
        return None
    if len(medians) >= MIN_JOBS_FOR_PASS_SPEED and all(len(m) == rounds and min(m) > 0 for m in medians):
        x = np.log(np.asarray(medians, dtype=float))
        slow = np.median(x - np.median(x, axis=1, keepdims=True), axis=0)
        return [float(v) for v in np.exp(-slow)]
    if probes:
        mid = float(np.median(probes))
        return [speed_factor(mid, p) for p in probes]
    return None


# The drift seen on this shared VM stays within about +-20%. A probe reading further from the
# reference than this is an anomaly of the probe's own timing, not of the machine, and is
# ignored: once a whole group's probes read 3x slow while its blocks ran 1.8x slow, and once
# (ExecuTorch, 2026-11-23) the anchors' probes read 1.34x slow while the anchors ran at the
# validation models' speed; rescaled, they dragged the fitted scale from 0.69 to 0.51 and the
# validation MAPE from 12.6% to 32%.
MAX_PROBE_DRIFT = 1.2


def speed_factor(reference_ms: float, probe_ms: float) -> float:
    """Factor that brings a timing taken at `probe_ms` to the speed of `reference_ms`."""
    f = reference_ms / probe_ms
    return f if 1 / MAX_PROBE_DRIFT <= f <= MAX_PROBE_DRIFT else 1.0


def rescale(entry: Entry, factor: float) -> Entry:
    return Entry(entry.median_ms * factor, entry.p10_ms * factor, entry.p90_ms * factor, entry.n)


def to_speed(entries: dict[str, Entry], cache: MeasurementCache, probe_ms: float | None) -> dict[str, Entry]:
    """Entries brought to the speed at which the probe takes `probe_ms`; entries measured
    without a probe (or no reference) are kept as they are."""
    if not probe_ms:
        return dict(entries)
    out = {}
    for key, e in entries.items():
        p = cache.probe(key)
        out[key] = rescale(e, speed_factor(probe_ms, p)) if p else e
    return out


# --------------------------------------------------------------------------- correction


# Kinds whose blocks get their own factor when enough anchors are measured (see Correction).
KIND_SCALED = ("conv",)
_MIN_ANCHORS_FOR_KINDS = 6


def fit_correction(predictor: Predictor, specs: list[ArchSpec], measured: list[Entry], seconds: float,
                   names: list[str] | None = None) -> Correction:
    """Fit measured = scale * (sum of other blocks + k * sum of conv blocks) + per_block_ms * n
    by relative least squares.

    The conv factor k (Correction.kind_scale) is fitted only with at least six anchors whose
    conv share varies, and kept only when positive; otherwise k = 1. With one model only the
    scale is fitted. A non-positive scale would mean the blocks do not explain the models at
    all; then scale-only is used (and the validation will show it).

    per_block_ms is bounded by the cheapest blocks of the table: a block artifact's call
    overhead (what a whole model saves per block) cannot exceed a whole cheap block, and a
    whole model cannot pay much more per block than one. An unbounded fit on a few noisy
    anchors once gave +4 ms a block, which priced a 13-block tiny model at 10x its blocks.
    """
    if not specs:
        return Correction()
    conv, rest, counts, ys, rows = [], [], [], [], []
    for i, (spec, m) in enumerate(zip(specs, measured)):
        sigs = predictor.signatures(spec, seconds)
        c = sum(predictor.block_ms(g)[0] for g in sigs if g.kind in KIND_SCALED)
        r = sum(predictor.block_ms(g)[0] for g in sigs if g.kind not in KIND_SCALED)
        conv.append(c), rest.append(r), counts.append(len(sigs)), ys.append(m.median_ms)
        rows.append({"name": (names[i] if names else spec.name) or f"model{i}", "measured_ms": round(m.median_ms, 4),
                     "sum_blocks_ms": round(c + r, 4), "n_blocks": len(sigs)})
    y, w = np.array(ys), 1.0 / np.array(ys)
    c_arr, r_arr, n_arr = np.array(conv), np.array(rest), np.array(counts, dtype=float)
    bound = _per_block_bound(predictor)
    shares = c_arr / np.maximum(c_arr + r_arr, 1e-12)
    if len(specs) >= _MIN_ANCHORS_FOR_KINDS and shares.max() - shares.min() > 0.1:
        fit = _fit_terms([c_arr, r_arr], n_arr, y, w, bound)
        if fit is not None:
            (k_conv, k_rest), per_block = fit
            return Correction(scale=k_rest, per_block_ms=per_block, fitted_on=tuple(rows),
                              kind_scale={"conv": k_conv / k_rest})
    fit = _fit_terms([c_arr + r_arr], n_arr, y, w, bound) if len(specs) >= 3 and len(set(counts)) > 1 else None
    if fit is not None:
        (scale,), per_block = fit
        return Correction(scale=scale, per_block_ms=per_block, fitted_on=tuple(rows))
    s_arr = c_arr + r_arr
    scale = float(np.dot(y * w, s_arr * w) / np.dot(s_arr * w, s_arr * w))
    return Correction(scale=scale, per_block_ms=0.0, fitted_on=tuple(rows))


def _fit_terms(terms: list[np.ndarray], counts: np.ndarray, y: np.ndarray, w: np.ndarray,
               bound: float) -> tuple[list[float], float] | None:
    """Relative least squares of y on the block-sum `terms` plus a per-block term; the per-block
    term is clamped to +-bound (then the sums are refitted with it fixed). None when a sum's
    coefficient comes out non-positive."""
    x = np.column_stack(terms + [counts])
    sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    coefs, per_block = [float(v) for v in sol[:-1]], float(sol[-1])
    if abs(per_block) > bound:
        per_block = math.copysign(bound, per_block)
        xs = np.column_stack(terms)
        sol, *_ = np.linalg.lstsq(xs * w[:, None], (y - per_block * counts) * w, rcond=None)
        coefs = [float(v) for v in sol]
    if min(coefs) <= 0:
        return None
    return coefs, per_block


def _per_block_bound(predictor: Predictor) -> float:
    """Median of the 5 cheapest measured blocks: the most a per-block term may be worth."""
    cheapest = sorted(e.median_ms for e in predictor.table.entries.values())[:5]
    return float(np.median(cheapest)) if cheapest else 0.0


# --------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class Accuracy:
    n: int
    mape: float  # percent
    rmse_ms: float
    within_5: float  # share of models within +-5%
    within_10: float
    rows: tuple[dict, ...]
    loadavg_1m: float | None = None  # load on the machine when the validation finished
    # Against the raw timings (not brought to the table's speed), when they differ.
    raw: "Accuracy | None" = None
    # How the timings were brought to the table's speed (validate): reference models or probe.
    speed: dict | None = None
    # Spread of each model's timing passes (pass_spread): the measurement's own noise.
    pass_spread: dict | None = None

    def to_dict(self) -> dict:
        out = {"n": self.n, "mape_pct": round(self.mape, 3), "rmse_ms": round(self.rmse_ms, 4),
               "within_5pct": round(self.within_5, 4), "within_10pct": round(self.within_10, 4),
               "loadavg_1m": self.loadavg_1m}
        if self.speed is not None:
            out["speed"] = self.speed
        if self.pass_spread is not None:
            out["pass_spread"] = self.pass_spread
        if self.raw is not None:
            out["raw_timings"] = {k: v for k, v in self.raw.to_dict().items() if k not in ("models", "loadavg_1m")}
        out["models"] = list(self.rows)
        return out

    def line(self) -> str:
        text = (f"{self.n} held-out models: MAPE {self.mape:.2f}%, RMSE {self.rmse_ms:.3f} ms, "
                f"{100 * self.within_5:.0f}% within +-5%, {100 * self.within_10:.0f}% within +-10%")
        if self.raw is not None:
            how = "probe"
            if self.speed and self.speed.get("method") == "reference models":
                how = f"{len(self.speed['models'])} reference models, x{self.speed['factor']:.3f}"
            text += (f" (at the table's speed by the {how}; raw timings: MAPE {self.raw.mape:.2f}%, "
                     f"{100 * self.raw.within_10:.0f}% within +-10%)")
        if self.pass_spread is not None:
            ps = self.pass_spread
            text += (f"; one model's timing passes spread by {ps['median_pct']:.1f}% (median), up to "
                     f"{ps['max_pct']:.1f}%")
            if "perfect_within_10pct" in ps:
                text += (f": with that noise a perfect predictor would be within +-10% of "
                         f"{100 * ps['perfect_within_10pct']:.0f}% of these {ps['rounds']}-pass medians")
        return text


def accuracy(predicted: list[float], measured: list[float], names: list[str],
             loadavg: float | None = None) -> Accuracy:
    p, m = np.array(predicted), np.array(measured)
    err = (p - m) / m
    rows = tuple({"name": n, "predicted_ms": round(float(a), 4), "measured_ms": round(float(b), 4),
                  "error_pct": round(float(100 * e), 3)} for n, a, b, e in zip(names, p, m, err))
    return Accuracy(len(p), float(100 * np.abs(err).mean()), float(math.sqrt(((p - m) ** 2).mean())),
                    float((np.abs(err) <= 0.05).mean()), float((np.abs(err) <= 0.10).mean()), rows, loadavg)


def validate(table: LatencyTable, grid: ProfileGrid, n: int, seconds: float, measure: MeasureFn,
             cache: MeasurementCache, seed: int = 1234, progress: ProgressFn | None = None,
             rounds: int = MODEL_ROUNDS) -> Accuracy:
    """Measure `n` random held-out architectures (half subnets, half pruned variants) end to
    end and compare with the table's predictions.

    The table predicts the machine at the speed it was profiled at. When the table names speed
    reference models (provenance.speed_reference), they are timed in the same interleaved
    passes as the held-out models, and the held-out timings are brought to the table's speed
    by how much slower or faster the references run now than when the table was built (the
    geometric mean of their ratios). Older tables fall back on the speed probe."""
    rng = random.Random(seed)
    specs = [grid.sample(rng) for _ in range(n)]
    refs = speed_references(table, seconds)
    if refs:
        batch = specs + [spec for spec, _ in refs]
        keys = _model_keys(batch, seconds, measure, rounds)
        tag = ",v=" + hashlib.sha1("|".join(keys).encode()).hexdigest()[:12]
        got = measure_models(batch, seconds, measure, cache, progress, what="validation", rounds=rounds, tag=tag)
        batch_keys = [k + tag for k in keys]
        raw, now = got[:n], got[n:]
        ratios = [table_ms / e.median_ms for (_, table_ms), e in zip(refs, now)]
        factor = float(math.exp(np.mean(np.log(ratios))))
        measured = [rescale(e, factor) for e in raw]
        speed = {"method": "reference models", "factor": round(factor, 4),
                 "models": [{"name": spec.name, "table_ms": round(table_ms, 4), "now_ms": round(e.median_ms, 4)}
                            for (spec, table_ms), e in zip(refs, now)]}
    else:
        probe = table.provenance.speed_probe
        probe_ms = probe.get("median_ms") if probe else None
        raw = measure_models(specs, seconds, measure, cache, progress, what="validation", rounds=rounds)
        batch_keys = _model_keys(specs, seconds, measure, rounds)
        scaled = to_speed(dict(zip(batch_keys, raw)), cache, probe_ms)
        measured = [scaled[k] for k in batch_keys]
        speed = {"method": "speed probe", "probe_ms": probe_ms} if probe_ms else None
    pred = Predictor(table)
    names = [f"{s.name}-{i}:{s.summary()}" for i, s in enumerate(specs)]
    predicted = [pred.predict_ms(s, seconds) for s in specs]
    load = _loadavg()
    acc = accuracy(predicted, [m.median_ms for m in measured], names, loadavg=load)
    batch_passes = [cache.passes(k) for k in batch_keys]
    passes = batch_passes[:n]
    rows = tuple({**r, "passes_ms": ps} if ps else r for r, ps in zip(acc.rows, passes))
    # The noise left in the medians is what remains once each pass is brought to the batch's
    # typical speed, as combine_passes did. Factors only come back when every model of the
    # batch has all its passes.
    factors = pass_factors([ps or [] for ps in batch_passes])
    at_speed = [[v * f for v, f in zip(ps, factors)] for ps in passes] if factors else passes
    acc = dataclasses.replace(acc, rows=rows, speed=speed, pass_spread=pass_spread(at_speed))
    if [m.median_ms for m in raw] == [m.median_ms for m in measured]:
        return acc
    acc_raw = accuracy(predicted, [m.median_ms for m in raw], names, loadavg=load)
    rows = tuple({**r, "measured_raw_ms": rr["measured_ms"]} for r, rr in zip(acc.rows, acc_raw.rows))
    return dataclasses.replace(acc, rows=rows, raw=acc_raw)


def pass_spread(passes: list[list[float] | None]) -> dict | None:
    """The timing noise of the models timed in more than one pass (None when none was): the
    floor the prediction errors are read against.

    - median_pct, max_pct: how far one model's passes spread, (slowest / fastest - 1) in percent.
    - pass_sd_pct: the pooled standard deviation of log pass medians around each model's mean
      (in percent), i.e. how far one pass strays from the model's own level.
    - median_sd_pct: what that makes of the median of a model's `rounds` passes (the figure
      the validation compares with), taking the noise as log-normal.
    - perfect_within_5pct, perfect_within_10pct: the share of models a predictor with no error
      at all would land within +-5% and +-10% of such medians. Against measurements this noisy,
      a predictor cannot be shown to be better than this; a goal above it needs more passes."""
    usable = [ps for ps in passes if ps and len(ps) > 1 and min(ps) > 0]
    if not usable:
        return None
    spreads = [100 * (max(ps) / min(ps) - 1) for ps in usable]
    logs = [np.log(np.asarray(ps, dtype=float)) for ps in usable]
    dof = sum(len(x) - 1 for x in logs)
    sd = math.sqrt(sum(float(((x - x.mean()) ** 2).sum()) for x in logs) / dof)
    rounds = int(np.median([len(x) for x in logs]))
    med_sd = median_sd(sd, rounds)
    return {"median_pct": round(float(np.median(spreads)), 2), "max_pct": round(float(max(spreads)), 2),
            "models": len(spreads), "rounds": rounds, "pass_sd_pct": round(100 * sd, 2),
            "median_sd_pct": round(100 * med_sd, 2),
            "perfect_within_5pct": round(_share_within(med_sd, 0.05), 3),
            "perfect_within_10pct": round(_share_within(med_sd, 0.10), 3)}


def median_sd(sd: float, k: int, draws: int = 20_000) -> float:
    """Standard deviation of the median of `k` normal draws of standard deviation `sd`
    (simulated with a fixed seed: the small-k factors have no closed form worth keeping)."""
    if sd <= 0 or k < 1:
        return 0.0
    x = np.random.default_rng(0).standard_normal((draws, k))
    return float(sd * np.median(x, axis=1).std())


def _share_within(sd: float, tol: float) -> float:
    """P(|exp(-e) - 1| <= tol) for e ~ N(0, sd): a perfect prediction p against a measurement
    p * exp(e) has the error (p - m) / m = exp(-e) - 1."""
    if sd <= 0:
        return 1.0
    cdf = NormalDist(0.0, sd).cdf
    return cdf(math.log(1 + tol)) - cdf(math.log(1 - tol))


# A table's prediction is for the machine at the speed it was profiled at, and a shared VM
# runs 10-20% faster or slower an hour later. The speed probe (one FFN block) follows that only
# roughly: on the AVX-512 VNNI host an ONNX int8 probe read 0.22 and 0.35 ms in one profile, and
# an ExecuTorch int8 validation read its held-out models 6% faster than the probe said. Whole
# models run the same mix of kernels as the held-out ones, so a few anchors of the table are
# timed again next to every validation instead. Each reference's ratio (its median at the
# profile over its median now) carries the noise of two 9-pass medians: the two references of
# one validation disagreed by 4-14% on the Intel host (2026-12-07, four validations), and one
# factor shifts every held-out model alike (ONNX fp32, 12:11: 19 of 20 predicted low, mean -6%,
# after two references read x1.170 and x1.033). Six of the table's anchors (of 10-11) cost
# four more models per validation and divide that error by sqrt(3).
SPEED_REFERENCES = 6


def pick_speed_references(anchors: list[ArchSpec], measured: list[Entry], seconds: float,
                          k: int = SPEED_REFERENCES) -> dict | None:
    """The `k` anchors closest (in log ms) to the anchors' median, with their medians at the
    table's speed: mid-sized models, typical of the held-out ones and cheap to lower again."""
    if not anchors:
        return None
    ms = [m.median_ms for m in measured]
    mid = float(np.median(ms))
    chosen = sorted(sorted(range(len(anchors)), key=lambda i: abs(math.log(ms[i] / mid)))[:k])
    return {"seconds": seconds,
            "models": [{"name": anchors[i].name, "measured_ms": round(ms[i], 6), "arch": anchors[i].to_dict()}
                       for i in chosen]}


def speed_references(table: LatencyTable, seconds: float) -> list[tuple[ArchSpec, float]]:
    """(spec, median ms at the table's speed) of the table's speed references at `seconds`;
    empty for a table without them or measured at another length."""
    ref = table.provenance.speed_reference
    if not ref or float(ref.get("seconds", 0)) != float(seconds):
        return []
    return [(ArchSpec.from_dict(m["arch"]), float(m["measured_ms"])) for m in ref["models"]]


# --------------------------------------------------------------------------- the whole profile


def build_table(grid: ProfileGrid, measure: MeasureFn, cache: MeasurementCache, provenance: Provenance,
                progress: ProgressFn | None = None, anchors: list[ArchSpec] | None = None,
                rounds: int = BLOCK_ROUNDS, model_rounds: int = MODEL_ROUNDS) -> LatencyTable:
    """Blocks of the grid (timed in `rounds` interleaved passes), then the anchor models (in
    `model_rounds`) and the correction fitted on them."""
    sigs = grid.signatures()
    load_before = _loadavg()
    entries = measure_blocks(sigs, measure, cache, progress, rounds=rounds)
    # The machine's speed drifts while the grid is measured; every entry is brought to the
    # probe's median speed over the whole profile (see RuntimeMeasure.probe).
    probes = [p for p in (cache.probe(k) for k in entries) if p]
    speed = float(np.median(probes)) if probes else None
    entries = to_speed(entries, cache, speed)
    entries, rechecked = recheck_outliers(entries, {s.key: s for s in sigs}, measure, cache, progress, rounds, speed)
    pred = Predictor(LatencyTable(provenance, entries))
    anchors = anchors if anchors is not None else grid.anchor_models()
    seconds = grid.seconds[0]
    measured = measure_models(anchors, seconds, measure, cache, progress, what="anchor models",
                              rounds=model_rounds, speed=speed)
    corr = fit_correction(pred, anchors, measured, seconds)
    reference = pick_speed_references(anchors, measured, seconds)
    # Other processes competing for the cores inflate and scatter every timing: the load
    # average around the run tells a reader how far to trust the table.
    cpu = {**provenance.cpu, "loadavg_1m_before": load_before, "loadavg_1m_after": _loadavg()}
    probe = None
    if speed:
        probe = {"block": PROBE_SIG.key, "median_ms": round(speed, 6),
                 "p10_ms": round(float(np.percentile(probes, 10)), 6),
                 "p90_ms": round(float(np.percentile(probes, 90)), 6), "samples": len(probes)}
        if getattr(measure, "probe_reference_ms", None):
            # Every timing was brought to this probe speed call by call (RuntimeMeasure.bind).
            probe["paired"] = True
    return LatencyTable(dataclasses.replace(provenance, cpu=cpu, speed_probe=probe, rechecked=rechecked,
                                            speed_reference=reference), entries, corr)


# A block whose median is further than this ratio (either way) from what the rest of its group
# predicts (predict.disagreement) is timed again. On the 2-core host one 512-channel conv block
# read 16.9 ms where the rest of its group put it near 12 ms, and a conv block's median moved
# 15-20% between runs an hour apart: one timing of a block can be a bad moment of the machine.
RECHECK_RATIO = 1.25


def recheck_outliers(entries: dict[str, Entry], sigs: dict[str, BlockSig], measure: MeasureFn,
                     cache: MeasurementCache, progress: ProgressFn | None = None, rounds: int = 1,
                     speed: float | None = None, ratio: float = RECHECK_RATIO) -> tuple[dict[str, Entry], dict | None]:
    """Time again each block that disagrees with its group by more than `ratio`.

    When the second median agrees with the first (within `ratio`) their mean is kept; when it
    does not, a third timing breaks the tie and the median of the three is kept. A block that
    really is off its group's trend (a cache cliff, a slow kernel) keeps its figure, only
    confirmed. Re-timings are cached under the block's key plus ",recheck1" and ",recheck2",
    so a resumed profile does not repeat them. Returns the entries and the record for
    Provenance.rechecked (None when nothing was re-timed)."""
    off = disagreement({k: e.median_ms for k, e in entries.items()})
    flagged = sorted(k for k, r in off.items() if not 1 / ratio <= r <= ratio and k in sigs)
    if not flagged:
        return entries, None

    def retime(keys: list[str], attempt: int) -> dict[str, Entry]:
        jobs = [(f"{k},recheck{attempt}", BlockJob(sigs[k])) for k in keys]
        _measure_jobs(jobs, measure, cache, progress, "rechecking blocks", rounds, chunk=16)
        got = to_speed({j: cache.get(j) for j, _ in jobs}, cache, speed)
        return {k: got[j] for k, (j, _) in zip(keys, jobs)}

    first = retime(flagged, 1)
    split = [k for k in flagged if not 1 / ratio <= first[k].median_ms / entries[k].median_ms <= ratio]
    second = retime(split, 2) if split else {}
    out, rows = dict(entries), []
    for k in flagged:
        taken = [entries[k], first[k]] + ([second[k]] if k in second else [])
        out[k] = _middle(taken)
        rows.append({"key": k, "off_group": round(off[k], 3), "medians_ms": [round(e.median_ms, 4) for e in taken],
                     "kept_ms": round(out[k].median_ms, 4)})
    return out, {"ratio": ratio, "blocks": rows}


def _middle(entries: list[Entry]) -> Entry:
    """Two entries: their mean. Three: the one with the median median (runs summed)."""
    n = sum(e.n for e in entries)
    if len(entries) == 2:
        a, b = entries
        return Entry((a.median_ms + b.median_ms) / 2, (a.p10_ms + b.p10_ms) / 2, (a.p90_ms + b.p90_ms) / 2, n)
    mid = sorted(entries, key=lambda e: e.median_ms)[len(entries) // 2]
    return Entry(mid.median_ms, mid.p10_ms, mid.p90_ms, n)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# A median of 15 runs of a 1 ms block is 15 ms of timing: one scheduler hiccup on a shared
# machine moves it by 10%. Runs are raised until each timing pass lasts about this long.
MIN_TIMED_MS = 500.0
# The speed probe: an FFN block of mid width, compute-bound like most of a model's time, about
# a millisecond on a laptop core; timed for this long before each pass.
PROBE_SIG = make("ffn", "ffn", e=512, f=2048, t=49, pre=0)
PROBE_TIMED_MS = 250.0
# The probe reference of a journal (RuntimeMeasure.bind) is one timing this long.
PROBE_REFERENCE_TIMED_MS = 1000.0
MAX_RUNS = 400


def runs_for(estimate_ms: float, runs: int, min_timed_ms: float = MIN_TIMED_MS) -> int:
    """Timed runs so the timed part lasts `min_timed_ms` (at least `runs`, at most MAX_RUNS)."""
    if min_timed_ms <= 0 or estimate_ms <= 0:
        return runs
    return max(runs, min(MAX_RUNS, math.ceil(min_timed_ms / estimate_ms)))


class RuntimeMeasure:
    """The real measurement: lower with the export pipeline, time on the connection.

    Calling it (`measure(module, example)`) lowers, times and deletes the artifact. `lower()`
    and `time()` do the two halves, so whole models can be timed in interleaved passes
    (measure_models); `lower_many()` lowers a group in `lower_workers` processes (lowering.py).
    Timing first takes a short estimate (the warm-up plus 3 runs), then `runs_for()` runs, so
    cheap blocks are timed for as long as whole models."""

    def __init__(self, backend: str, dtype: str, threads: int, connection: Any, warmup: int = 3, runs: int = 15,
                 workdir: str | None = None, min_timed_ms: float = MIN_TIMED_MS, lower_workers: int | None = None):
        from ..errors import require_module

        require_module("edgekit.export", "all")
        from ..export import SUFFIX

        self.backend, self.dtype, self.threads, self.connection = backend, dtype, threads, connection
        self.warmup, self.runs, self.min_timed_ms = warmup, runs, min_timed_ms
        self._own_tmp = workdir is None
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix="edgekit-profile-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.suffix = SUFFIX[backend]
        self._probe: tuple[str, float] | None = None  # (path, estimated ms per call)
        self.lowering = LoweringPool(backend, dtype, lower_workers)
        # Paired timing (time_artifact_paired) where the connection has it; see bind().
        self.paired = hasattr(connection, "time_artifact_paired")
        self.probe_reference_ms: float | None = None

    def lower(self, module: Any, example: Any, name: str = "block") -> str:
        return lower_one(self.backend, self.dtype, lambda: (module, example), str(self.tmp / f"{name}{self.suffix}"))

    def lower_many(self, items: list[tuple[Any, str]]) -> list[str]:
        """Lower (build, name) items (build: a picklable BlockJob / ModelJob) at once."""
        return self.lowering.lower([(build, str(self.tmp / f"{name}{self.suffix}")) for build, name in items])

    def close(self) -> None:
        """Stop the lowering workers (they are also stopped when this object is collected) and
        remove the speed probe's artifact (and the scratch folder when this made it)."""
        self.lowering.close()
        if self._probe is not None:
            Path(self._probe[0]).unlink(missing_ok=True)
            self._probe = None
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def bind(self, cache: MeasurementCache) -> None:
        """Time every artifact from now on against the speed probe (paired timing), brought
        to the cache's probe reference; the first binding of a journal measures and records it.

        On a shared VM the machine's speed swings within seconds, by up to 2x on the 2-core
        Intel host (2026-12-07: one model read 32 and 61 ms ten seconds apart, every artifact
        moving together). The probe timed a few milliseconds before and after each slice of
        calls sees the same machine: a model's window medians spread 20.7% raw and 3.1% as a
        ratio to the probe (ONNX fp32, 30 windows). Every entry of one journal (blocks,
        anchors, validation models, in any process) is at the one speed where the probe takes
        the reference. Without a paired connection (SSH, adb) nothing changes: a probe per pass."""
        if not self.paired:
            return
        if cache.probe_reference_ms is None:
            path, est = self._probe_artifact()
            runs = runs_for(est, self.runs, PROBE_REFERENCE_TIMED_MS)
            cache.set_probe_reference(float(self.connection.time_artifact(path, self.warmup, runs, self.threads).median_ms))
        self.probe_reference_ms = cache.probe_reference_ms

    def time(self, path: str) -> Any:
        n = self.runs
        if self.min_timed_ms > 0:
            estimate = self.connection.time_artifact(path, self.warmup, 3, self.threads).median_ms
            n = runs_for(estimate, self.runs, self.min_timed_ms)
        if self.paired and self.probe_reference_ms:
            probe_path, _ = self._probe_artifact()
            got = self.connection.time_artifact_paired(path, probe_path, self.warmup, n, self.threads)
            return got.at_speed(self.probe_reference_ms)
        return self.connection.time_artifact(path, self.warmup, n, self.threads)

    def _probe_artifact(self) -> tuple[str, float]:
        """(path, estimated ms per call) of the speed probe (PROBE_SIG), lowered and estimated
        (warm-up plus 3 runs) on first use."""
        from .modules import build_block_module

        if self._probe is None:
            module, example = build_block_module(PROBE_SIG)
            path = self.lower(module, example, "speed-probe")
            self._probe = (path, float(self.connection.time_artifact(path, self.warmup, 3, self.threads).median_ms))
        return self._probe

    def probe(self) -> float:
        """Median ms of the speed probe right now; with paired timing (bind) the reference
        every timing is already brought to.

        Timed before every timing pass without paired timing: on a shared VM (or a phone that
        heats up) the whole machine runs faster or slower for minutes at a time, and every
        artifact timed in that pass is brought back to the probe's median speed over the profile."""
        if self.paired and self.probe_reference_ms:
            return self.probe_reference_ms
        path, est = self._probe_artifact()
        runs = runs_for(est, self.runs, PROBE_TIMED_MS)
        return float(self.connection.time_artifact(path, self.warmup, runs, self.threads).median_ms)

    def __call__(self, module: Any, example: Any) -> Any:
        path = self.lower(module, example)
        try:
            return self.time(path)
        finally:
            Path(path).unlink(missing_ok=True)


def runtime_measure(backend: str, dtype: str, threads: int, connection: Any, warmup: int = 3, runs: int = 15,
                    workdir: str | None = None, min_timed_ms: float = MIN_TIMED_MS,
                    lower_workers: int | None = None) -> RuntimeMeasure:
    """The real measurement (RuntimeMeasure) for one backend, dtype and thread count."""
    return RuntimeMeasure(backend, dtype, threads, connection, warmup, runs, workdir, min_timed_ms, lower_workers)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def check_threads(threads: int, device_cores: int) -> None:
    if threads < 1 or threads > device_cores:
        raise UserError(f"--threads {threads}: expected 1..{device_cores} (the device's cores)")
