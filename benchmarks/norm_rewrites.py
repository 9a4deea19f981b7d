"""Which export rewrites make hubert-base fast in ExecuTorch (XNNPACK, fp32)?

    python benchmarks/norm_rewrites.py [--model hubert-base] [--threads 2] [--rounds 9] [--variants a,b]

Lowers one .pte per variant (attention rewrite on/off x LayerNorm style x GroupNorm style x the
channels-last conv extractor, see edgekit.export.prepare), then times them interleaved: every
round runs each variant once after one untimed call, so a load change on the shared machine
hits every variant alike. Reports medians, partitions, delegated fraction and which ops stay
outside XNNPACK, and writes benchmarks/results/norm_rewrites.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit import runtime, zoo
from edgekit.export import lower_module, prepare_module
from edgekit.export.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "norm_rewrites.json"
# name -> (attention rewrite, layer_norm style, group_norm style, channels-last conv extractor)
VARIANTS = {
    "none": (False, "none", "none", False),
    "attn": (True, "none", "none", False),
    "attn+ln_pool": (True, "pool", "none", False),
    "attn+gn_pool": (True, "none", "pool", False),
    "attn+ln_pool+gn_pool": (True, "pool", "pool", False),
    "attn+ln_linear": (True, "linear", "none", False),
    "attn+ln_linear+gn_linear": (True, "linear", "linear", False),
    "ln_linear+gn_linear": (False, "linear", "linear", False),
    "attn+ln_pool+gn_pool+conv": (True, "pool", "pool", True),
}


def wait_for_quiet(max_load: float, limit_s: float = 900) -> None:
    """The machine is shared: time only once the others' jobs have calmed down (or give up
    waiting after limit_s; the load is recorded with the results either way)."""
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < limit_s:
        time.sleep(15)
    print(f"timing at load {os.getloadavg()[0]:.2f} after waiting {time.time() - t0:.0f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hubert-base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="Wait (up to 15 min) for the 1-minute load average to drop below this before timing.")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
    samples = int(round(args.seconds * 16000))
    model, spec = zoo.create_model(args.model).eval(), zoo.get_spec(args.model)
    example = torch.randn(1, samples) * 0.1
    with torch.no_grad():
        ref = model(example).last_hidden_state
    work = Path(tempfile.mkdtemp(prefix="edgekit-normrw-"))
    rows = {}
    for name in names:
        attention, ln, gn, conv = VARIANTS[name]
        mod = prepare_module(model, spec, attention=attention, layer_norm=ln, group_norm=gn, conv=conv,
                             samples=samples, example=example)
        path = work / f"{name}.pte"
        rep = lower_module(mod, example, "executorch", "fp32", path)
        rows[name] = {"attention": attention, "layer_norm": ln, "group_norm": gn, "channels_last_conv": conv,
                      "partitions": rep.partitions, "delegated_fraction": rep.delegated_fraction,
                      "non_delegated_ops": rep.non_delegated_ops, "lower_s": round(rep.seconds, 1), "ms": []}
        print(f"lowered {name}: {rep.partitions} partitions, {100 * rep.delegated_fraction:.1f}% delegated, "
              f"outside: {rep.non_delegated_ops}", flush=True)
    wait_for_quiet(args.max_load)
    runners = {n: runtime.load(work / f"{n}.pte", threads=args.threads) for n in names}
    x = example.numpy()
    for n, r in runners.items():
        y = r.run(x)
        rows[n]["rel_err"] = float(np.abs(y - ref.numpy()).max() / ref.abs().max())
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for n, r in runners.items():
            r.run(x)
            t0 = time.perf_counter()
            r.run(x)
            rows[n]["ms"].append((time.perf_counter() - t0) * 1e3)
    load_after = os.getloadavg()[0]
    base = float(np.median(rows[names[0]]["ms"]))
    for n in names:
        rows[n]["median_ms"] = float(np.median(rows[n]["ms"]))
        rows[n]["vs_first"] = rows[n]["median_ms"] / base
        print(f"{n:28s} {rows[n]['median_ms']:8.1f} ms  x{rows[n]['vs_first']:.2f} vs {names[0]}  "
              f"{rows[n]['partitions']:3d} part.  {100 * rows[n]['delegated_fraction']:.1f}%  "
              f"rel err {rows[n]['rel_err']:.1e}", flush=True)
    data = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "seconds": args.seconds,
            "threads": args.threads, "rounds": args.rounds, "loadavg_1min": [load_before, load_after],
            "torch": torch.__version__, "variants": rows}
    write_text_atomic(RESULTS, json.dumps(data, indent=2) + "\n")
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
