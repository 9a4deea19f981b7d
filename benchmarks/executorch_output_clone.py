"""What the ExecuTorch runner's one-thread output clone buys (runners.ExecuTorchRunner._run).

    python benchmarks/executorch_output_clone.py [--threads 2] [--rounds 5] [--models hubert-base,distilhubert]

ExecuTorch's Python bindings hand each output back as a torch tensor cloned out of the
method's memory. A clone of more than 32768 elements runs as a torch OpenMP region, and its
worker thread spins for milliseconds afterwards on a core XNNPACK's threads need for the next
run. The runner now clones with torch at one thread. This times the same artifacts both ways,
interleaved in every round: a hubert-base encoder layer's two blocks (what a latency table
holds; both output 49 x 768 floats) and whole fp32 models at 1 s. Prints medians and the
ratio, and writes benchmarks/results/executorch_output_clone.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit import runtime
from edgekit.latency.lowering import lower_one
from edgekit.latency.modules import build_block_module
from edgekit.latency.signature import make
from edgekit.latency.table import write_json_atomic
from edgekit.runtime.runners import ExecuTorchRunner
from edgekit.zoo import get_spec

ROOT = Path(__file__).resolve().parents[1]


def run_with_torch_threads(self: ExecuTorchRunner, x: np.ndarray) -> np.ndarray:
    """The runner's call before the fix: the clone runs at torch's default thread count."""
    out = self._method.execute([self._torch.from_numpy(x)])
    return out[0].numpy()


MODES = {"one-thread clone (shipped)": ExecuTorchRunner._run, "default-thread clone (before)": run_with_torch_threads}


def lower(module, example, path: Path) -> str:
    """Lowered as the profiler lowers a block (latency.lowering.lower_one)."""
    return lower_one("executorch", "fp32", lambda: (module, example), str(path))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="hubert-base,distilhubert")
    args = ap.parse_args()
    from edgekit.latency.profile import whole_model_module

    blocks = {"attention block 768/12 heads": make("attention", "attention", e=768, h=12, hd=64, t=49, pre=0),
              "ffn block 768/3072": make("ffn", "ffn", e=768, f=3072, t=49, pre=0)}
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-clone-") as tmp:
        paths = {}
        for name, sig in blocks.items():
            m, x = build_block_module(sig)
            paths[name] = lower(m, x, Path(tmp) / f"{sig.kind}.pte")
        for model in [m for m in args.models.split(",") if m]:
            m, x = whole_model_module(get_spec(model), 1.0)
            paths[model] = lower(m, x, Path(tmp) / f"{model}.pte")
        runners = {k: runtime.load(p, threads=args.threads) for k, p in paths.items()}
        try:
            for _ in range(args.rounds):
                for k, r in runners.items():
                    for mode, fn in MODES.items():
                        ExecuTorchRunner._run = fn
                        samples.setdefault(k, {}).setdefault(mode, []).append(r.time(warmup=3, runs=15).median_ms)
        finally:
            ExecuTorchRunner._run = MODES["one-thread clone (shipped)"]
    rows = {}
    for k, by_mode in samples.items():
        med = {mode: float(np.median(v)) for mode, v in by_mode.items()}
        shipped, before = med["one-thread clone (shipped)"], med["default-thread clone (before)"]
        rows[k] = {"median_ms": {m: round(v, 3) for m, v in med.items()}, "speedup": round(before / shipped, 3),
                   "rounds_ms": {m: [round(v, 3) for v in vs] for m, vs in by_mode.items()}}
        print(f"{k:30s} before {before:8.2f} ms  shipped {shipped:8.2f} ms  {before / shipped:5.2f}x")
    out = {"benchmark": "executorch_output_clone", "threads": args.threads, "rounds": args.rounds,
           "runs_per_round": 15, "artifacts": rows, "loadavg_1m": round(os.getloadavg()[0], 2)}
    path = ROOT / "benchmarks" / "results" / "executorch_output_clone.json"
    write_json_atomic(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
