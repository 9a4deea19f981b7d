"""Bringing timings taken at different moments to one machine speed.

A shared VM (or a phone that heats up) runs faster or slower from one minute to the next.
Three ways to undo that, from the finest: paired timing (runtime.Runner.time_against, used by
measure.RuntimeMeasure), per-pass factors read off the artifacts of one chunk or off the speed
probe (pass_factors, speed_factor), and speed reference models timed again next to a validation
(pick_speed_references, speed_references).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..arch import ArchSpec
from .cache import MeasurementCache, to_entry
from .table import Entry, LatencyTable


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
