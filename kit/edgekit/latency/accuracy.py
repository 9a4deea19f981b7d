"""A table's measured error: held-out models timed end to end against its predictions, and
the timing noise those errors are read against."""
from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .cache import MeasurementCache
from .grid import ProfileGrid
from .predict import Predictor
from .profile import MODEL_ROUNDS, MeasureFn, ProgressFn, loadavg_1m, measure_models, model_keys
from .speed import pass_factors, rescale, speed_references, to_speed
from .table import LatencyTable


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
        keys = model_keys(batch, seconds, measure, rounds)
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
        batch_keys = model_keys(specs, seconds, measure, rounds)
        scaled = to_speed(dict(zip(batch_keys, raw)), cache, probe_ms)
        measured = [scaled[k] for k in batch_keys]
        speed = {"method": "speed probe", "probe_ms": probe_ms} if probe_ms else None
    pred = Predictor(table)
    names = [f"{s.name}-{i}:{s.summary()}" for i, s in enumerate(specs)]
    predicted = [pred.predict_ms(s, seconds) for s in specs]
    load = loadavg_1m()
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
