"""Where the predictor's error comes from, read from the measurement caches (nothing is timed).

Usage: python benchmarks/predictor_error_sources.py [--backends executorch,onnx] [--dtypes fp32,int8]

For every host table (`edgekit profile`, then `benchmarks/predictor_accuracy.py`, whose
held-out models must be in the measurement cache):

- `loo`: the correction refitted, leave-one-out, on the held-out models themselves (19 of
  them, timed in the same passes as the 20th, which it then predicts). If drift between the
  anchors' timing and the validation's were the error, this would remove it; what is left is
  the block figures' error.
- `anchor_timings`: the validation against raw timings, with the correction fitted on the
  anchors brought to the probe's speed (what `edgekit profile` does) and on their raw timings.
- `probe_vs_models`: for every pair of caches of the same backend and dtype (profiles of other
  revisions), how the drift of whole-model timings between the two relates to the drift of the
  speed probe read with them: their correlation, and the spread of the model ratios before and
  after scaling by the probe ratios. A probe that tracks the machine narrows the spread. The
  caches of one backend and dtype are profiles under different export-rewrite or timing
  revisions, so part of a model's drift between two of them is a real change of its artifact;
  the probe cannot explain that part, and need not.

Prints and writes benchmarks/results/predictor_error_sources.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

import numpy as np

from edgekit.latency import LatencyTable, MeasurementCache, Predictor, best_table, fit_correction, get_grid
from edgekit.latency.profile import model_keys
from edgekit.latency.speed import to_speed
from edgekit.latency.table import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "predictor_error_sources.json"
N_HELD_OUT, SEED, ROUNDS = 20, 1234, 3  # as benchmarks/predictor_accuracy.py


class _CachedOnly:
    """A measure that only lets cached timings through (lower/time make it interleaving, so
    cache keys carry the rounds suffix the profile used)."""

    def lower(self, *args):
        raise RuntimeError("not in the measurement cache: run benchmarks/predictor_accuracy.py first")

    time = probe = lower


def _stats(predicted: np.ndarray, measured: np.ndarray) -> dict:
    err = predicted / measured - 1
    return {"mape_pct": round(float(100 * np.abs(err).mean()), 2),
            "within_5pct": round(float((np.abs(err) <= 0.05).mean()), 2),
            "within_10pct": round(float((np.abs(err) <= 0.10).mean()), 2)}


def table_sources(backend: str, dtype: str) -> dict:
    table = best_table("host", backend, dtype)
    grid = get_grid(table.provenance.space or "lighthubert-base")
    seconds = grid.seconds[0]
    cache = MeasurementCache.for_config("host", backend, dtype, table.provenance.threads)
    rng = random.Random(SEED)
    specs = [grid.sample(rng) for _ in range(N_HELD_OUT)]
    measured = [cache.get(k) for k in model_keys(specs, seconds, _CachedOnly(), ROUNDS)]
    if any(m is None for m in measured):
        raise SystemExit(f"{backend} {dtype}: held-out models are not cached; run "
                         f"benchmarks/predictor_accuracy.py --backend {backend} --dtype {dtype} first")
    y = np.array([m.median_ms for m in measured])
    blocks = Predictor(LatencyTable(table.provenance, table.entries))
    loo = []
    for i in range(len(specs)):
        rest = [j for j in range(len(specs)) if j != i]
        corr = fit_correction(blocks, [specs[j] for j in rest], [measured[j] for j in rest], seconds)
        loo.append(Predictor(LatencyTable(table.provenance, table.entries, corr)).predict_ms(specs[i], seconds))
    anchors = grid.anchor_models()
    anchor_keys = model_keys(anchors, seconds, _CachedOnly(), ROUNDS)
    raw_anchors = [cache.get(k) for k in anchor_keys]
    probe = (table.provenance.speed_probe or {}).get("median_ms")
    scaled = to_speed(dict(zip(anchor_keys, raw_anchors)), cache, probe)
    out = {"table": table.path, "n": len(specs), "loo": _stats(np.array(loo), y), "anchor_timings": {}}
    for name, ms in (("probe_scaled", [scaled[k] for k in anchor_keys]), ("raw", raw_anchors)):
        corr = fit_correction(blocks, anchors, ms, seconds)
        pred = Predictor(LatencyTable(table.provenance, table.entries, corr))
        out["anchor_timings"][name] = {"scale": round(corr.scale, 4),
                                       **_stats(np.array([pred.predict_ms(s, seconds) for s in specs]), y)}
    return out


def _journal(path: Path) -> dict[str, tuple[float, float]]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("probe_ms"):
            out[rec["key"]] = (rec["entry"]["median_ms"], rec["probe_ms"])
    return out


def probe_vs_models(backend: str, dtype: str) -> list[dict]:
    root = MeasurementCache.for_config("host", backend, dtype, 2).path.parent
    paths = sorted(root.glob(f"host-{backend}-{dtype}-t2*.jsonl"), key=lambda p: p.stat().st_mtime)
    rows = []
    for a, b in itertools.combinations(paths, 2):
        ja, jb = _journal(a), _journal(b)
        keys = [k for k in ja if k in jb and k.startswith("model:")]
        if len(keys) < 5:
            continue
        t = np.log([jb[k][0] / ja[k][0] for k in keys])
        p = np.log([jb[k][1] / ja[k][1] for k in keys])
        rows.append({"caches": [a.name, b.name], "models": len(keys),
                     "correlation": round(float(np.corrcoef(t, p)[0, 1]), 3) if p.std() > 0 else None,
                     "log_spread_raw": round(float(t.std()), 4),
                     "log_spread_probe_scaled": round(float((t - p).std()), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="executorch,onnx")
    ap.add_argument("--dtypes", default="fp32,int8")
    args = ap.parse_args()
    result = {"benchmark": "predictor_error_sources", "tables": {}, "probe_vs_models": {}}
    for backend, dtype in itertools.product(args.backends.split(","), args.dtypes.split(",")):
        name = f"{backend}_{dtype}"
        src = result["tables"][name] = table_sources(backend, dtype)
        a = src["anchor_timings"]
        print(f"{name}: leave-one-out correction on the held-out models: MAPE {src['loo']['mape_pct']}%, "
              f"{100 * src['loo']['within_10pct']:.0f}% within 10%; correction from probe-scaled anchors "
              f"{a['probe_scaled']['mape_pct']}%, from raw anchors {a['raw']['mape_pct']}% (raw validation timings)")
        pairs = result["probe_vs_models"][name] = probe_vs_models(backend, dtype)
        for r in pairs:
            print(f"  {r['caches'][0]} -> {r['caches'][1]}: {r['models']} models, correlation {r['correlation']}, "
                  f"log spread {r['log_spread_raw']} raw, {r['log_spread_probe_scaled']} probe-scaled")
    write_json_atomic(RESULTS, result)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
