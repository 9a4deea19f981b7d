"""Profiling: measure a grid of blocks and a few whole models on a device, write a table.

Measurement is a callable `measure(module, example) -> stats` (anything with median_ms,
p10_ms, p90_ms, n), so the logic here (journal, resume, interleaved passes, correction fit)
does not depend on how a number is obtained. measure.RuntimeMeasure is the real one: it lowers
the module with the export pipeline (the same prepare/quantize steps as a whole model) and
times the artifact in the real runtime on the device's connection.

The journal is cache.py, the speed corrections speed.py, the anchors' fit correction.py and
the held-out validation accuracy.py.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..arch import ArchSpec
from ..errors import UserError
from .cache import MeasurementCache, model_key, to_entry
from .correction import fit_correction
from .grid import ProfileGrid
from .measure import PROBE_SIG
from .predict import Predictor, disagreement
from .signature import BlockSig
from .speed import combine_passes, pass_factors, pick_speed_references, to_speed
from .table import BUILD_PHASES, Entry, LatencyTable, Provenance

MeasureFn = Callable[[Any, Any], Any]  # (nn.Module, example tensor) -> stats with median_ms, p10_ms, p90_ms, n
ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


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
    keys = [k + tag for k in model_keys(specs, seconds, measure, rounds)]
    jobs = [(k, ModelJob(spec, seconds)) for k, spec in zip(keys, specs)]
    _measure_jobs(jobs, measure, cache, progress, what, rounds, chunk=len(jobs))
    scaled = to_speed({k: cache.get(k) for k in keys}, cache, speed)
    return [scaled[k] for k in keys]


def model_keys(specs: list[ArchSpec], seconds: float, measure: MeasureFn, rounds: int) -> list[str]:
    # A median of passes is a different estimate than one pass: keyed apart, so changing
    # --rounds measures again instead of mixing the two.
    suffix = f",r={rounds}" if _interleaves(measure, rounds) else ""
    return [model_key(spec, seconds) + suffix for spec in specs]


# --------------------------------------------------------------------------- the whole profile


def build_table(grid: ProfileGrid, measure: MeasureFn, cache: MeasurementCache, provenance: Provenance,
                progress: ProgressFn | None = None, anchors: list[ArchSpec] | None = None,
                rounds: int = BLOCK_ROUNDS, model_rounds: int = MODEL_ROUNDS) -> LatencyTable:
    """Blocks of the grid (timed in `rounds` interleaved passes), then the anchor models (in
    `model_rounds`) and the correction fitted on them."""
    sigs = grid.signatures()
    load_before = loadavg_1m()
    anchors = anchors if anchors is not None else grid.anchor_models()
    seconds = grid.seconds[0]
    anchor_keys = model_keys(anchors, seconds, measure, model_rounds)
    needed = list({s.key for s in sigs}) + anchor_keys
    held = sum(k in cache for k in needed)
    clock = [time.perf_counter()]
    _lower_models_ahead([ModelJob(spec, seconds) for spec, key in zip(anchors, anchor_keys) if key not in cache],
                        measure, cache, model_rounds)
    entries = measure_blocks(sigs, measure, cache, progress, rounds=rounds)
    clock.append(time.perf_counter())
    # The machine's speed drifts while the grid is measured; every entry is brought to the
    # probe's median speed over the whole profile (see RuntimeMeasure.probe).
    probes = [p for p in (cache.probe(k) for k in entries) if p]
    speed = float(np.median(probes)) if probes else None
    entries = to_speed(entries, cache, speed)
    entries, rechecked = recheck_outliers(entries, {s.key: s for s in sigs}, measure, cache, progress, rounds, speed)
    clock.append(time.perf_counter())
    pred = Predictor(LatencyTable(provenance, entries))
    measured = measure_models(anchors, seconds, measure, cache, progress, what="anchor models",
                              rounds=model_rounds, speed=speed)
    clock.append(time.perf_counter())
    # Wall time per phase; the anchors' lowering ahead counts in the blocks' phase, where it runs.
    spent = [b - a for a, b in zip(clock, clock[1:])]
    phases = dict(zip(("blocks", "rechecking", "anchors"), spent), total=sum(spent))
    build = {"seconds": {k: round(phases[k], 1) for k in BUILD_PHASES},
             "measured": len(needed) - held, "from_journal": held}
    corr = fit_correction(pred, anchors, measured, seconds)
    reference = pick_speed_references(anchors, measured, seconds)
    # Other processes competing for the cores inflate and scatter every timing: the load
    # average around the run tells a reader how far to trust the table.
    cpu = {**provenance.cpu, "loadavg_1m_before": load_before, "loadavg_1m_after": loadavg_1m()}
    probe = None
    if speed:
        probe = {"block": PROBE_SIG.key, "median_ms": round(speed, 6),
                 "p10_ms": round(float(np.percentile(probes, 10)), 6),
                 "p90_ms": round(float(np.percentile(probes, 90)), 6), "samples": len(probes)}
        if getattr(measure, "probe_reference_ms", None):
            # Every timing was brought to this probe speed call by call (RuntimeMeasure.bind).
            probe["paired"] = True
    return LatencyTable(dataclasses.replace(provenance, cpu=cpu, speed_probe=probe, rechecked=rechecked,
                                            speed_reference=reference, build=build), entries, corr)


def _lower_models_ahead(jobs: list[ModelJob], measure: MeasureFn, cache: MeasurementCache, rounds: int) -> None:
    """Start lowering the (uncached) model `jobs` in the measure's workers, so they share the
    workers with the blocks' first chunk (RuntimeMeasure.lower_ahead). The probe reference is
    timed first (bind): nothing is timed while a worker lowers."""
    ahead = getattr(measure, "lower_ahead", None)
    if not jobs or ahead is None or not _interleaves(measure, rounds):
        return
    bind = getattr(measure, "bind", None)
    if bind is not None:
        bind(cache)
    ahead(jobs)


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


def loadavg_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def check_threads(threads: int, device_cores: int) -> None:
    if threads < 1 or threads > device_cores:
        raise UserError(f"--threads {threads}: expected 1..{device_cores} (the device's cores)")
