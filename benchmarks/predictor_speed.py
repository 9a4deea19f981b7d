"""Predictions per second of the search's fast path, Predictor.predict_ms.

Usage: python benchmarks/predictor_speed.py [--device host] [--backend executorch] [--dtype fp32] [--n 5000]

Samples N fresh random architectures of the lighthubert-base grid (half subnets, half pruned),
then times predict_ms on all of them cold (every spec new: signatures computed, interpolations
fitted on first use) and warm (the same specs again: memoised). Medians of 5 repeats. Writes
benchmarks/results/predictor_speed.json.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from edgekit.latency import Predictor, best_table, get_grid
from edgekit.latency.table import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="host")
    ap.add_argument("--backend", default="executorch")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    table = best_table(args.device, args.backend, args.dtype)
    grid = get_grid("lighthubert-base")
    cold, warm = [], []
    for rep in range(5):
        rng = random.Random(rep)
        specs = [grid.sample(rng) for _ in range(args.n)]
        pred = Predictor(table)
        t0 = time.perf_counter()
        for s in specs:
            pred.predict_ms(s, 1.0)
        cold.append(args.n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for s in specs:
            pred.predict_ms(s, 1.0)
        warm.append(args.n / (time.perf_counter() - t0))
    result = {"benchmark": "predictor_speed", "table": table.path, "method": table.provenance.method,
              "n_specs": args.n, "repeats": 5, "cold_predictions_per_s": round(statistics.median(cold)),
              "warm_predictions_per_s": round(statistics.median(warm)), "target_per_s": 3000}
    out = Path(__file__).resolve().parent / "results" / "predictor_speed.json"
    write_json_atomic(out, result)
    print(f"cold (every spec new): {result['cold_predictions_per_s']:,}/s; warm (memoised): "
          f"{result['warm_predictions_per_s']:,}/s; target 3,000/s; written to {out}")


if __name__ == "__main__":
    main()
