"""What a transformer layer costs alone, in a chain of layers and inside a whole model, per width.

    python benchmarks/block_context.py [--backend executorch] [--dtype fp32] [--threads 2] [--rounds 9]
        [--layers 512:8:2048,640:10:2560,768:12:3072]

The latency tables time every block as its own artifact (edgekit profile) and fit one linear
correction from the sum of blocks to whole models. That correction is the same for every
width, so if a layer's cost in context departs from its blocks' cost by a width-dependent
amount, the predictor is off for whole families of models. For each encoder layer E:HEADS:FFN
(49 frames, post-LN) this measures:

1. the attention block and the FFN block alone (what a table holds);
2. chains of 1, 2, 5 and 11 such layers (attention + FFN, each with its own weights) in one
   artifact; the marginal cost of a layer is the slope between chain lengths;
3. two whole models that differ only in depth (the edge grid's anchor-768x1 and
   anchor-768x12, at this layer's width): (T12 - T1) / 11 is what one layer costs inside a
   model.

All artifacts are lowered the way the profiler lowers blocks (export_form) and timed in
`rounds` passes, each pass in a fresh random order (so no artifact always follows the same
one), and each pass brought to the typical speed of the passes (latency.speed.pass_factors)
before the median is taken. With a measured host table for the backend and dtype the table's
figures for the two blocks are reported next to them. Prints medians and writes
benchmarks/results/block_context_<backend>_<dtype>_t<threads>.json.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from edgekit import runtime
from edgekit.arch import LayerSpec
from edgekit.errors import UserError
from edgekit.export import SUFFIX
from edgekit.latency import best_table, get_grid
from edgekit.latency.lowering import lower_one
from edgekit.latency.modules import build_block_module
from edgekit.latency.predict import Predictor
from edgekit.latency.measure import MIN_TIMED_MS, runs_for
from edgekit.latency.profile import whole_model_module
from edgekit.latency.speed import pass_factors
from edgekit.latency.signature import make
from edgekit.latency.table import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
CHAINS = (1, 2, 5, 11)
FRAMES, HEAD_DIM = 49, 64
DEFAULT_LAYERS = "512:8:2048,640:10:2560,768:12:3072"


def parse_layers(text: str) -> list[tuple[int, int, int]]:
    out = []
    for part in text.split(","):
        try:
            e, h, f = (int(v) for v in part.split(":"))
        except ValueError:
            raise SystemExit(f"--layers {part!r}: expected E:HEADS:FFN, e.g. 768:12:3072") from None
        if min(e, h, f) < 1:
            raise SystemExit(f"--layers {part!r}: width, heads and FFN must be positive")
        out.append((e, h, f))
    return out


def lower(module, example, backend: str, dtype: str, path: Path) -> str:
    """Lowered as the profiler lowers a block (latency.lowering.lower_one)."""
    return lower_one(backend, dtype, lambda: (module, example), str(path))


def lower_layer(e: int, h: int, f: int, backend: str, dtype: str, d: Path) -> dict[str, str]:
    """The artifacts for one layer shape: its two blocks alone, chains, two whole models."""
    tag = f"{e}x{h}x{f}"
    attn = make("attention", "attention", e=e, h=h, hd=HEAD_DIM, t=FRAMES, pre=0)
    ffn = make("ffn", "ffn", e=e, f=f, t=FRAMES, pre=0)
    paths = {}
    for name, sig in (("attention alone", attn), ("ffn alone", ffn)):
        m, x = build_block_module(sig)
        paths[name] = lower(m, x, backend, dtype, d / f"{tag}-{name.split()[0]}{SUFFIX[backend]}")
    blocks = [build_block_module(s, seed=i)[0] for i in range(max(CHAINS)) for s in (attn, ffn)]
    x = build_block_module(attn)[1]
    for n in CHAINS:
        paths[f"chain of {n}"] = lower(nn.Sequential(*blocks[:2 * n]).eval(), x, backend, dtype,
                                       d / f"{tag}-chain{n}{SUFFIX[backend]}")
    anchors = {a.name: a for a in get_grid("edge").anchor_models()}
    for depth in (1, 12):
        spec = anchors[f"anchor-768x{depth}"]
        spec = spec.replace(embed_dim=e, layers=tuple(LayerSpec(h, f, HEAD_DIM) for _ in range(depth)),
                            name=f"model-{e}x{depth}")
        m, x = whole_model_module(spec, 1.0)
        paths[f"model x{depth}"] = lower(m, x, backend, dtype, d / f"{tag}-model{depth}{SUFFIX[backend]}")
    return paths


def host_predictor(backend: str, dtype: str) -> Predictor | None:
    """A predictor on the measured host table for this backend and dtype (None without one)."""
    try:
        table = best_table("host", backend, dtype)
    except UserError:  # no table for this backend and dtype yet: report the measurements only
        return None
    return None if table.provenance.estimated else Predictor(table)


def table_blocks(pred: Predictor, e: int, h: int, f: int) -> dict:
    """The table's figures for one layer shape's two blocks."""
    a, a_src = pred.block_ms(make("attention", "attention", e=e, h=h, hd=HEAD_DIM, t=FRAMES, pre=0))
    b, b_src = pred.block_ms(make("ffn", "ffn", e=e, f=f, t=FRAMES, pre=0))
    return {"attention_ms": round(a, 3), "ffn_ms": round(b, 3), "source": [a_src, b_src],
            "table": pred.table.path, "date": pred.table.provenance.date}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="executorch", choices=("executorch", "onnx", "tflite"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--layers", default=DEFAULT_LAYERS, help="E:HEADS:FFN[,E:HEADS:FFN...] (default %(default)s)")
    args = ap.parse_args()
    if args.rounds < 2:
        raise SystemExit("--rounds: expected at least 2 (passes are compared with each other)")
    b, dt = args.backend, args.dtype
    layers = parse_layers(args.layers)
    keys: list[tuple[tuple[int, int, int], str]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-context-") as tmp:
        paths: list[str] = []
        for shape in layers:
            for name, p in lower_layer(*shape, b, dt, Path(tmp)).items():
                keys.append((shape, name))
                paths.append(p)
        runners = [runtime.load(p, threads=args.threads) for p in paths]
        # Timed for about as long as the profiler times a block, so the cheap blocks are not
        # read off a handful of runs.
        runs = [runs_for(r.time(warmup=3, runs=3, threads=args.threads).median_ms, 15, MIN_TIMED_MS) for r in runners]
        passes: list[list[float]] = [[] for _ in paths]
        for r in range(args.rounds):
            order = list(range(len(paths)))
            random.Random(r).shuffle(order)
            for j in order:
                passes[j].append(runners[j].time(warmup=3, runs=runs[j], threads=args.threads).median_ms)
            print(f"pass {r + 1}/{args.rounds}", flush=True)
    factors = pass_factors(passes) or [1.0] * args.rounds
    med = [float(np.median([v * k for v, k in zip(ps, factors)])) for ps in passes]
    by_shape: dict[tuple[int, int, int], dict[str, float]] = {}
    for (shape, name), m in zip(keys, med):
        by_shape.setdefault(shape, {})[name] = m
    pred = host_predictor(b, dt)
    results = []
    for (e, h, f), m in by_shape.items():
        alone = m["attention alone"] + m["ffn alone"]
        chain = {n: m[f"chain of {n}"] for n in CHAINS}
        slopes = {f"{a}->{c}": (chain[c] - chain[a]) / (c - a) for a, c in zip(CHAINS, CHAINS[1:])}
        in_model = (m["model x12"] - m["model x1"]) / 11
        row = {"layer": {"e": e, "heads": h, "ffn": f, "frames": FRAMES},
               "median_ms": {k: round(v, 3) for k, v in m.items()},
               "layer_ms": {"blocks_alone": round(alone, 3),
                            "chain_slope": {k: round(v, 3) for k, v in slopes.items()},
                            "in_model": round(in_model, 3)},
               "in_model_over_alone": round(in_model / alone, 3)}
        tb = table_blocks(pred, e, h, f) if pred is not None else None
        if tb is not None:
            row["table_blocks"] = tb
        results.append(row)
        print(f"{b} {dt} layer {e}:{h}:{f}: blocks alone {alone:.2f} ms; chain slope "
              + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items())
              + f" ms; inside a model {in_model:.2f} ms ({in_model / alone:.2f}x alone)"
              + (f"; table {tb['attention_ms'] + tb['ffn_ms']:.2f} ms" if tb else ""))
    out = {"benchmark": "block_context", "backend": b, "dtype": dt, "threads": args.threads,
           "rounds": args.rounds, "pass_factors": [round(v, 3) for v in factors], "layers": results,
           "rounds_ms": {f"{e}:{h}:{f} {name}": [round(x, 3) for x in ps]
                         for ((e, h, f), name), ps in zip(keys, passes)},
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    path = ROOT / "benchmarks" / "results" / f"block_context_{b}_{dt}_t{args.threads}.json"
    write_json_atomic(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
