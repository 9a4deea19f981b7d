"""What padding off-tile widths to 16 buys, per format (the measurement behind edgekit.widths).

    python benchmarks/width_padding.py [--threads 2] [--rounds 5] [--formats executorch,onnx,tflite]

1. Blocks: hubert-base's second extractor conv (k=3, s=2, 1,599 output frames, c_in = c_out)
   at pruned widths and at the width padding gives them, lowered to each format the way the
   profiler lowers blocks (export_form) and timed interleaved in each round.
2. A whole pruned model (off-tile extractor and FFN widths, the shapes DPHuBERT leaves)
   exported to ExecuTorch fp32 with and without padding, timed interleaved.

Prints medians and ratios measured in the same run and writes
benchmarks/results/width_padding.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekit import runtime, zoo
from edgekit.arch import ConvLayer, LayerSpec, WaveformFrontend
from edgekit.export import SUFFIX, export_form, lower_module, prepare_module
from edgekit.export.atomic import write_text_atomic
from edgekit.latency.modules import build_block_module
from edgekit.latency.signature import block_signatures, make
from edgekit.models import build_model
from edgekit.widths import padded_spec, round_up

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "width_padding.json"
WIDTHS = (504, 456, 216)  # off-tile; each is compared with round_up(w, 16)


def pruned_spec():
    """A DPHuBERT-like pruned hubert-base: off-tile extractor widths, uneven FFNs and heads."""
    base = zoo.get_spec("hubert-base")
    convs = tuple(ConvLayer(c, k, s) for c, (k, s) in
                  zip((168, 200, 264, 392, 424, 472, 512), [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2))
    ffns = (1000, 1400, 1720, 2030, 1800, 1500, 1330, 1210, 990, 700, 500, 300)
    heads = (12, 11, 9, 10, 8, 8, 7, 6, 6, 5, 4, 3)
    return base.replace(frontend=WaveformFrontend(convs), name="pruned-hubert",
                        layers=tuple(LayerSpec(h, f) for h, f in zip(heads, ffns)))


def conv_sig(width: int):
    sig = [s for s in block_signatures(zoo.get_spec("hubert-base"), 1.0) if s.kind == "conv"][1]
    d = sig.as_dict()
    d.update(cin=width, cout=width)
    return make("conv", "conv", **d)


def time_interleaved(paths: dict[str, str], threads: int, rounds: int, runs: int) -> dict[str, dict]:
    runners = {k: runtime.load(p, threads=threads) for k, p in paths.items()}
    samples: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, r in runners.items():
            samples[k].append(r.time(warmup=2, runs=runs, threads=threads).median_ms)
    return {k: {"median_ms": float(np.median(v)), "rounds": [round(x, 3) for x in v]} for k, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--formats", default="executorch,onnx,tflite")
    args = ap.parse_args()
    out: dict = {"benchmark": "width_padding", "threads": args.threads, "rounds": args.rounds,
                 "blocks": {}, "model": None}
    with tempfile.TemporaryDirectory(prefix="edgekit-pad-") as tmp:
        for fmt in args.formats.split(","):
            paths = {}
            for w in WIDTHS + tuple(round_up(w, 16) for w in WIDTHS):
                if str(w) in paths:
                    continue
                module, example = build_block_module(conv_sig(w))
                module, example = export_form(module, example, fmt)
                paths[str(w)] = lower_module(module, example, fmt, "fp32", Path(tmp) / f"conv{w}{SUFFIX[fmt]}").path
            timed = time_interleaved(paths, args.threads, args.rounds, runs=15)
            rows = []
            for w in WIDTHS:
                p = round_up(w, 16)
                a, b = timed[str(w)]["median_ms"], timed[str(p)]["median_ms"]
                rows.append({"width": w, "padded": p, "ms": round(a, 3), "padded_ms": round(b, 3),
                             "speedup": round(a / b, 3)})
                print(f"{fmt:10s} conv {w:4d} ch {a:7.2f} ms | padded to {p:4d}: {b:7.2f} ms | {a / b:4.2f}x",
                      flush=True)
            out["blocks"][fmt] = rows
        if "executorch" in args.formats.split(","):
            spec = pruned_spec()
            torch.manual_seed(0)
            model = build_model(spec).eval()
            paths = {}
            for label, pad in (("unpadded", 0), ("padded", None)):
                wrapper = prepare_module(model, spec, fmt="executorch", samples=16000, pad=pad)
                paths[label] = lower_module(wrapper, torch.zeros(1, 16000), "executorch", "fp32",
                                            Path(tmp) / f"{label}.pte").path
            x = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32) * 0.1
            ya, yb = (runtime.load(paths[k]).run(x) for k in ("unpadded", "padded"))
            timed = time_interleaved(paths, args.threads, args.rounds, runs=11)
            a, b = timed["unpadded"]["median_ms"], timed["padded"]["median_ms"]
            out["model"] = {"name": spec.name, "arch": spec.summary(), "padded_arch": padded_spec(spec, 16).summary(),
                            "unpadded_ms": round(a, 3), "padded_ms": round(b, 3), "speedup": round(a / b, 3),
                            "max_abs_diff": float(np.abs(ya - yb).max())}
            print(f"executorch {spec.summary()}\n  unpadded {a:.1f} ms, padded {b:.1f} ms: {a / b:.2f}x "
                  f"(outputs differ by {out['model']['max_abs_diff']:.2g})", flush=True)
    out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS, json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
