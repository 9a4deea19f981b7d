"""Predictor accuracy on held-out architectures, measured end to end on this machine.

Usage: python benchmarks/predictor_accuracy.py --backend executorch --dtype fp32 [--n 20] [--space GRID]

Loads the measured host table for the backend/dtype (write it first with `edgekit profile`),
samples N random held-out models from the grid (half LightHuBERT subnets, half pruned
variants with arbitrary heads, FFN and conv widths), lowers and times each whole model in the
real runtime, and compares with the prediction. Prints and writes
benchmarks/results/predictor_<backend>_<dtype>.json with MAPE, RMSE, the share within +-5% and
+-10%, and every model's predicted and measured median, and stores that accuracy on the table
(its `validation`), as `edgekit profile --validate` does. Models timed before (the profile's
measurement cache) are not timed again.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from edgekit.devices import connect, get_device
from edgekit.latency import MeasurementCache, best_table, get_grid, runtime_measure, save_table, validate
from edgekit.latency.profile import MODEL_ROUNDS
from edgekit.latency.table import write_json_atomic
from result_file import result_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, choices=["executorch", "onnx", "tflite"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--space", default=None, help="grid to sample held-out models from (default: the table's)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--rounds", type=int, default=MODEL_ROUNDS,
                    help="interleaved timing passes per model (median kept)")
    ap.add_argument("--suffix", default="",
                    help="appended to the result's file name (predictor_B_T_SUFFIX.json), e.g. another host's run")
    args = ap.parse_args()
    out = result_path(f"predictor_{args.backend}_{args.dtype}", args.suffix)
    table = best_table("host", args.backend, args.dtype)
    if table.provenance.estimated:
        raise SystemExit("the host table is estimated; measure it with `edgekit profile` first")
    grid = get_grid(args.space or table.provenance.space or "lighthubert-base")
    threads = table.provenance.threads
    measure = runtime_measure(args.backend, args.dtype, threads, connect(get_device("host")),
                              warmup=table.provenance.warmup or 3, runs=table.provenance.runs or 15)
    cache = MeasurementCache.for_config("host", args.backend, args.dtype, threads)
    t0 = time.perf_counter()
    cached_before = len(cache)
    try:
        acc = validate(table, grid, args.n, grid.seconds[0], measure, cache, seed=args.seed,
                       progress=lambda w, d, n: print(f"{w} {d}/{n}", flush=True), rounds=args.rounds)
    finally:
        measure.close()
    result = {"benchmark": "predictor_accuracy", "backend": args.backend, "dtype": args.dtype,
              "space": grid.name, "seconds": grid.seconds[0], "seed": args.seed, "rounds": args.rounds,
              "table": table.path,
              "table_provenance": dataclasses.asdict(table.provenance),
              "correction": {"scale": table.correction.scale, "per_block_ms": table.correction.per_block_ms,
                             "kind_scale": dict(table.correction.kind_scale)},
              "targets": {"mape_pct_max": 5.0, "within_10pct_min": 0.95},
              "met": acc.mape <= 5.0 and acc.within_10 >= 0.95,
              "wall_seconds": round(time.perf_counter() - t0, 1),
              # Models already in the measurement cache are not timed again: wall_seconds and
              # loadavg then describe this run, not when they were timed.
              "models_timed_now": len(cache) - cached_before, **acc.to_dict()}
    write_json_atomic(out, result)
    # The table carries its held-out accuracy, as after `edgekit profile --validate`, so
    # `edgekit predict` shows it next to every prediction from that table.
    save_table(dataclasses.replace(table, validation=acc.to_dict()), table.path)
    print(acc.line())
    print(f"validation stored in {table.path}")
    print(f"targets met: {result['met']}; written to {out}")


if __name__ == "__main__":
    main()
