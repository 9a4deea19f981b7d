"""Export latency: every model x format x dtype at a fixed window, timed in its own runtime.

    python benchmarks/export_latency.py [--models hubert-base,...] [--formats executorch,onnx,tflite]
        [--dtypes fp32,int8] [--threads 2] [--runs 15] [--seconds 1.0]

Writes benchmarks/results/export_latency.json (after every row, so a long run leaves partial
results) and the table in docs/benchmarks.md. Ratios are against PyTorch eager measured in the
same run; GFLOP/s is 2 x the ArchSpec MAC count / median latency, against an fp32 GEMM
(2048^3) peak measured at the start of the run with the same thread count. Medians, because
the machine is shared. Weights are random (nothing can be downloaded): latency and size do not
depend on them, parity is measured on them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit import runtime, zoo
from edgekit.export import export_model, lower_module, prepare_module
from edgekit.export.atomic import write_text_atomic
from edgekit.export.manifest import tool_versions
from edgekit.runtime.timing import summarize

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "export_latency.json"
DOC = ROOT / "docs" / "benchmarks.md"
NOTES_MARKER = "<!-- notes: kept when export_latency.py rewrites the table above -->"
DEFAULT_MODELS = ("hubert-base", "distilhubert", "fithubert", "fast-hubert", "lighthubert-small")


def gemm_peak_gflops(threads: int, n: int = 2048, runs: int = 7) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(ts)) / 1e9


def eager_ms(model, samples: int, threads: int, runs: int) -> dict:
    torch.set_num_threads(threads)
    x = torch.randn(1, samples) * 0.1
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            ts.append((time.perf_counter() - t0) * 1e3)
    return summarize(ts, warmup=3, threads=threads).to_dict()


def time_artifact(path: Path, threads: int, runs: int) -> dict:
    return runtime.load(path, threads=threads).time(warmup=3, runs=runs, threads=threads).to_dict()


def export_int8_or_fp32(model, spec, fmt, dtype, out, seconds, name, row):
    """export_model; for int8, when the format's default mode fails the parity gate, the other
    mode is tried (quantization is a measured decision) and the failure is kept in the row."""
    from edgekit.export import DEFAULT_QUANT, ParityError

    kw = dict(seconds=seconds, source=name, calibration_count=8, parity_count=2)
    if dtype == "fp32":
        return export_model(model, spec, fmt, dtype, out, **kw)
    first = DEFAULT_QUANT[fmt]
    try:
        return export_model(model, spec, fmt, dtype, out, quant=first, **kw)
    except ParityError as e:
        row["failed_mode"] = {"mode": first, "parity": e.result.to_dict()}
        other = "dynamic" if first == "static" else "static"
        return export_model(model, spec, fmt, dtype, out, quant=other, **kw)


def write_doc(data: dict) -> None:
    lines = ["# Benchmarks", "", "## Export latency (`benchmarks/export_latency.py`)", "",
             f"Run {data['date']} on {data['machine']}, {data['threads']} threads, {data['seconds']:g} s input, "
             f"median of {data['runs']} timed runs after 3 warm-up runs, random weights. fp32 GEMM peak "
             f"(2048^3, same threads, same run): {data['gemm_peak_gflops']:.0f} GFLOP/s. The machine is shared, so "
             "compare ratios within this run rather than absolute times across runs.", "",
             "| model | format | dtype | median ms | vs eager | int8 vs fp32 | GFLOP/s | % peak | MB | parity | delegated | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32 = {(r["model"], r["format"]): r for r in data["rows"] if r["dtype"] == "fp32" and not r.get("error")}
    for r in data["rows"]:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['format']} | {r['dtype']} | failed: {r['error'][:90]} | | | | | | | | |")
            continue
        par = r.get("parity") or {}
        ptxt = (f"rel {par['rel_err']:.1e}" if r["dtype"] == "fp32" else f"cos {par['cosine_mean']:.4f}") if par else "-"
        deleg = "-" if r.get("delegated_fraction") is None else \
            f"{100 * r['delegated_fraction']:.1f}% / {r['partitions']} part."
        speed = "-" if r.get("speedup_vs_eager") is None else f"{r['speedup_vs_eager']:.2f}x"
        base = fp32.get((r["model"], r["format"])) if r["dtype"] == "int8" else None
        vs32 = "-" if base is None else f"{base['median_ms'] / r['median_ms']:.2f}x, " \
            f"{100 * r['size_mb'] / base['size_mb']:.0f}% size"
        if r["dtype"] == "int8" and (r.get("quantization") or {}).get("mode"):
            ptxt += f" ({r['quantization']['mode']})"
        lines.append(f"| {r['model']} | {r['format']} | {r['dtype']} | {r['median_ms']:.1f} | {speed} | {vs32} | "
                     f"{r['gflops']:.0f} | {100 * r['gflops'] / data['gemm_peak_gflops']:.0f}% | "
                     f"{r['size_mb']:.1f} | {ptxt} | {deleg} | {r.get('loadavg_1min', '-')} |")
    lines += ["", "`vs eager` = PyTorch eager median / artifact median (higher is faster); `int8 vs fp32` = "
              "the same format's fp32 median / int8 median and the int8 artifact's size as a share of fp32's; "
              "`load` = the 1-minute load average when the row was timed. Rows named `... (no rewrites)` "
              "lower the same model without prepare's norm and attention rewrites, to measure what they buy.", ""]
    # Hand-written analysis below NOTES_MARKER survives regeneration of the table.
    old = DOC.read_text() if DOC.exists() else ""
    if NOTES_MARKER in old:
        lines += [old[old.index(NOTES_MARKER):].rstrip("\n"), ""]
    write_text_atomic(DOC, "\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--formats", default="executorch,onnx,tflite")
    ap.add_argument("--dtypes", default="fp32,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--no-ablation", action="store_true", help="Skip the no-rewrite ExecuTorch row.")
    args = ap.parse_args()
    samples = int(round(args.seconds * 16000))
    data = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "threads": args.threads, "seconds": args.seconds, "runs": args.runs, "tools": tool_versions(),
            "gemm_peak_gflops": gemm_peak_gflops(args.threads), "eager": {}, "rows": []}
    print(f"fp32 GEMM peak: {data['gemm_peak_gflops']:.0f} GFLOP/s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))

    def save():
        write_text_atomic(RESULTS, json.dumps(data, indent=2) + "\n")
        write_doc(data)

    for name in args.models.split(","):
        spec = zoo.get_spec(name).without_heads()
        model = zoo.create_model(name).eval()
        flops = 2 * spec.mac_count(args.seconds)
        eager = eager_ms(model, samples, args.threads, args.runs)
        data["eager"][name] = eager
        print(f"{name}: eager {eager['median_ms']:.1f} ms", flush=True)
        jobs = [(f, d, True) for f in args.formats.split(",") for d in args.dtypes.split(",")]
        if name == "hubert-base" and "executorch" in args.formats and not args.no_ablation:
            jobs.insert(1, ("executorch", "fp32", False))
        for fmt, dtype, rewrite in jobs:
            row = {"model": name if rewrite else f"{name} (no rewrites)", "format": fmt, "dtype": dtype}
            try:
                t0 = time.perf_counter()
                if rewrite:
                    r = export_int8_or_fp32(model, spec, fmt, dtype, workdir / name, args.seconds, name, row)
                    path, man = r.artifact_path, r.manifest
                    row.update(parity=man["parity"], **{k: man["delegation"][k] for k in
                                                        ("delegated_fraction", "partitions", "non_delegated_ops")})
                    row["quantization"] = man["quantization"]
                else:
                    mod = prepare_module(model, spec, rewrite=False)
                    path = workdir / name / f"{name}-norewrite.pte"
                    rep = lower_module(mod, torch.randn(1, samples) * 0.1, fmt, dtype, path)
                    row.update(delegated_fraction=rep.delegated_fraction, partitions=rep.partitions,
                               non_delegated_ops=rep.non_delegated_ops, parity=None)
                row["export_s"] = time.perf_counter() - t0
                row["loadavg_1min"] = round(os.getloadavg()[0], 2)
                stats = time_artifact(path, args.threads, args.runs)
                row.update(stats=stats, median_ms=stats["median_ms"], size_mb=path.stat().st_size / 1e6,
                           speedup_vs_eager=eager["median_ms"] / stats["median_ms"],
                           gflops=flops / (stats["median_ms"] / 1e3) / 1e9)
                path.unlink()
                print(f"  {fmt} {dtype}{'' if rewrite else ' no-rewrite'}: {row['median_ms']:.1f} ms "
                      f"({row['speedup_vs_eager']:.2f}x eager), {row['size_mb']:.1f} MB", flush=True)
            except Exception as e:  # one failing row must not lose the others; it is recorded
                row["error"] = " ".join(str(e).split())[:300]
                print(f"  {fmt} {dtype}: FAILED {row['error']}", flush=True)
            data["rows"].append(row)
            save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
