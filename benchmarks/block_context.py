"""What a transformer layer costs alone, in a chain of layers and inside a whole model.

    python benchmarks/block_context.py [--backend executorch] [--dtype fp32] [--threads 2] [--rounds 3]

The latency tables time every block as its own artifact (edgekit profile) and fit one linear
correction from the sum of blocks to whole models. This measures how far a lone block is from
its cost in context, for one hubert-base encoder layer (E=768, 12 heads, FFN 3072, 49 frames):

1. the attention block and the FFN block alone (what the table holds);
2. chains of 1, 2, 5 and 11 such layers (attention + FFN, each with its own weights) in one
   artifact; the marginal cost of a layer is the slope between chain lengths;
3. two whole models that differ only in depth (anchor-768x1 and anchor-768x12 of the edge
   grid): (T12 - T1) / 11 is what one layer costs inside a model.

All artifacts are lowered the way the profiler lowers blocks (export_form) and timed
interleaved in each round. Prints medians and writes
benchmarks/results/block_context_<backend>_<dtype>_t<threads>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from edgekit import runtime
from edgekit.export import SUFFIX
from edgekit.latency import get_grid
from edgekit.latency.lowering import lower_one
from edgekit.latency.modules import build_block_module
from edgekit.latency.profile import whole_model_module
from edgekit.latency.signature import make
from edgekit.latency.table import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
CHAINS = (1, 2, 5, 11)
E, HEADS, FFN, FRAMES = 768, 12, 3072, 49


def lower(module, example, backend: str, dtype: str, path: Path) -> str:
    """Lowered as the profiler lowers a block (latency.lowering.lower_one)."""
    return lower_one(backend, dtype, lambda: (module, example), str(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="executorch", choices=("executorch", "onnx", "tflite"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    b, dt = args.backend, args.dtype
    attn = make("attention", "attention", e=E, h=HEADS, hd=64, t=FRAMES, pre=0)
    ffn = make("ffn", "ffn", e=E, f=FFN, t=FRAMES, pre=0)
    paths: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-context-") as tmp:
        d = Path(tmp)
        for name, sig in (("attention alone", attn), ("ffn alone", ffn)):
            m, x = build_block_module(sig)
            paths[name] = lower(m, x, b, dt, d / f"{name.split()[0]}{SUFFIX[b]}")
        blocks = [build_block_module(s, seed=i)[0] for i in range(max(CHAINS)) for s in (attn, ffn)]
        x = build_block_module(attn)[1]
        for n in CHAINS:
            paths[f"chain of {n}"] = lower(nn.Sequential(*blocks[:2 * n]).eval(), x, b, dt, d / f"chain{n}{SUFFIX[b]}")
        anchors = {a.name: a for a in get_grid("edge").anchor_models()}
        for name in ("anchor-768x1", "anchor-768x12"):
            m, x = whole_model_module(anchors[name], 1.0)
            paths[name] = lower(m, x, b, dt, d / f"{name}{SUFFIX[b]}")
        runners = {k: runtime.load(p, threads=args.threads) for k, p in paths.items()}
        samples: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for k, r in runners.items():
                samples[k].append(r.time(warmup=3, runs=15, threads=args.threads).median_ms)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    alone = med["attention alone"] + med["ffn alone"]
    chain = {n: med[f"chain of {n}"] for n in CHAINS}
    in_model = (med["anchor-768x12"] - med["anchor-768x1"]) / 11
    slopes = {f"{a}->{c}": (chain[c] - chain[a]) / (c - a) for a, c in zip(CHAINS, CHAINS[1:])}
    out = {"benchmark": "block_context", "backend": b, "dtype": dt, "threads": args.threads, "rounds": args.rounds,
           "layer": {"e": E, "heads": HEADS, "ffn": FFN, "frames": FRAMES},
           "median_ms": {k: round(v, 3) for k, v in med.items()},
           "rounds_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()},
           "layer_ms": {"blocks_alone": round(alone, 3), "chain_slope": {k: round(v, 3) for k, v in slopes.items()},
                        "in_model": round(in_model, 3)},
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    for k, v in med.items():
        print(f"{b} {dt} {k:18s} {v:8.2f} ms")
    print(f"one layer: blocks alone {alone:.2f} ms; chain slope "
          + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items())
          + f" ms; inside a model {in_model:.2f} ms")
    path = ROOT / "benchmarks" / "results" / f"block_context_{b}_{dt}_t{args.threads}.json"
    write_json_atomic(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
