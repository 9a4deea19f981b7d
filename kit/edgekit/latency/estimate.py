"""Estimated tables for devices nobody here can measure, derived from a measured host table.

Device model (docs/latency-tables.md has the derivation): every host block time is split into
a compute part and a rest.

    compute_host = 2 * MACs / host_gemm_rate           (the time at the host's measured GEMM rate)
    rest_host    = max(t_host - compute_host, 0)         (element-wise work, memory, call overhead)
    t_device     = compute_host * host_gemm_rate / device_gemm_rate
                 + rest_host * (0.5 * bandwidth_ratio + 0.5 * clock_ratio)

host_gemm_rate is measured here (numpy fp32 GEMM on the table's thread count; int8 uses the
nominal int8/fp32 throughput ratio of the host's SIMD). device_gemm_rate = nominal peak of the
device's `threads` fastest cores (clock x FLOPs per cycle, registry.py) x GEMM_EFFICIENCY.
bandwidth_ratio = host copy bandwidth (measured) / device sustained bandwidth (registry);
clock_ratio = host clock / device big-core clock (per-call scalar overhead). The whole-model
correction keeps its scale and per-kind factors and scales its per-block overhead by clock_ratio.

Every figure used is written into the table's provenance.derivation, and the table's method is
`estimated`, which every command prints.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from ..devices import Device
from .predict import Predictor
from .signature import block_signatures, macs, parse_key
from .table import Correction, Entry, LatencyTable

# Share of nominal peak XNNPACK/MLAS GEMM kernels reach on big Arm cores (published XNNPACK
# and Arm Compute Library GEMM benchmarks sit around 60-80%).
GEMM_EFFICIENCY = 0.7


# Each figure is the 90th percentile of the per-call rates in its own warm loop lasting about
# this long: the rate the host reaches when nothing disturbs it, which is what the devices'
# nominal peaks are compared with. An earlier version timed one GEMM and one 32 MB copy in
# turn, five times: the copy flushed the caches and let BLAS's threads fall asleep, and the
# same machine read 91, 131 and 182 GFLOP/s within an hour, which moved every estimated table
# by up to 2x. One-second loops still read 95 GFLOP/s twice against 138-183 otherwise: the
# shared dev VM slows down for whole seconds, so each loop lasts three (docs/latency-tables.md).
FIGURE_SECONDS = 3.0


def host_figures(threads: int, seconds: float = FIGURE_SECONDS) -> dict[str, float]:
    """Measure the host's fp32 GEMM rate (1024^3, `threads` BLAS threads) and its memory copy
    bandwidth (32 MB, far beyond caches): each the 90th percentile of the per-call rates in a
    warm loop of `seconds`."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore

        ctx: Any = threadpool_limits(limits=threads)
    except ImportError:
        import contextlib

        ctx = contextlib.nullcontext()
    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    big = np.ones(32 * 1024 * 1024 // 4, dtype=np.float32)
    dst = np.empty_like(big)
    with ctx:
        gemm = _rate_loop(lambda: a @ b, 2 * n ** 3, seconds)
    copy = _rate_loop(lambda: np.copyto(dst, big), 2 * big.nbytes, seconds)
    return {"host_gemm_gflops": round(gemm, 2), "host_copy_gbs": round(copy, 2)}


def _rate_loop(work: Any, units: float, seconds: float, warmup: int = 3, min_runs: int = 5) -> float:
    """90th percentile of units / second (in 1e9) over a loop of `work` lasting `seconds` after
    warm-up."""
    for _ in range(warmup):
        work()
    rates = []
    end = time.perf_counter() + seconds
    while len(rates) < min_runs or time.perf_counter() < end:
        t0 = time.perf_counter()
        work()
        rates.append(units / (time.perf_counter() - t0) / 1e9)
    return float(np.percentile(rates, 90))


def estimate_table(host: LatencyTable, host_device: Device, device: Device, figures: dict[str, float],
                   threads: int | None = None, backend: str | None = None) -> LatencyTable:
    """Derive `device`'s table from the measured `host` table (same backend unless given)."""
    if host.provenance.estimated:
        raise ValueError(f"{host.path or 'table'} is itself estimated; derive estimates from a measured host table")
    dtype = host.provenance.dtype
    threads = threads or device.default_threads
    host_rate = figures["host_gemm_gflops"]
    if dtype == "int8":
        host_rate *= host_device.peak_gflops(1, "int8") / host_device.peak_gflops(1, "fp32")
    dev_rate = device.peak_gflops(threads, dtype) * GEMM_EFFICIENCY
    big = device.fastest_cores(1)[0]
    bw_ratio = figures["host_copy_gbs"] / device.mem_bandwidth_gbs
    clock_ratio = host_device.clusters[0].ghz / big.ghz
    rest_ratio = 0.5 * bw_ratio + 0.5 * clock_ratio
    entries: dict[str, Entry] = {}
    compute_share = []
    for key, e in host.entries.items():
        kind, d = parse_key(key)
        compute_h = min(2 * macs(kind, d) / (host_rate * 1e9) * 1e3, e.median_ms)
        rest_h = e.median_ms - compute_h
        t = compute_h * host_rate / dev_rate + rest_h * rest_ratio
        f = t / e.median_ms
        # With p10 equal to the median, median * (t / median) can land one ulp off t.
        entries[key] = Entry.ordered(t, e.p10_ms * f, e.p90_ms * f, e.n)
        compute_share.append(compute_h / e.median_ms)
    corr = host.correction
    corr = Correction(corr.scale, corr.per_block_ms * clock_ratio,
                      tuple({**r, "note": "host measurement"} for r in corr.fitted_on), corr.kind_scale)
    derivation = {
        "model": "t_dev = compute_host * host_gemm_rate / device_gemm_rate + rest_host * (0.5 * bw_ratio + 0.5 * clock_ratio)",
        "source_table": {"device": host.provenance.device, "backend": host.provenance.backend,
                         "dtype": dtype, "threads": host.provenance.threads, "date": host.provenance.date,
                         "path": host.path},
        "host": {"cpu": host_device.description, **figures,
                 "gemm_rate_used_gops": round(host_rate, 2), "clock_ghz": host_device.clusters[0].ghz},
        "device": {"cores_used": [f"{c.core} {c.ghz} GHz" for c in device.fastest_cores(threads)],
                   "nominal_peak_gops": round(device.peak_gflops(threads, dtype), 2),
                   "gemm_efficiency": GEMM_EFFICIENCY, "gemm_rate_used_gops": round(dev_rate, 2),
                   "mem_bandwidth_gbs": device.mem_bandwidth_gbs},
        "ratios": {"compute_host_over_device": round(host_rate / dev_rate, 4), "bandwidth": round(bw_ratio, 4),
                   "clock": round(clock_ratio, 4), "rest": round(rest_ratio, 4)},
        "median_compute_share_on_host": round(float(np.median(compute_share)), 4),
    }
    prov = replace(host.provenance, device=device.name, backend=backend or host.provenance.backend,
                   threads=threads, affinity=device.affinity, method="estimated", derivation=derivation,
                   # Host models timed on the host: nothing a validation on the device could re-time.
                   speed_reference=None,
                   build=None,  # nothing was profiled on the device; the source table has its own
                   cpu={"clusters": [c.__dict__ for c in device.clusters]},
                   notes=f"estimated from the host table; replace it by measuring {device.name}")
    table = LatencyTable(prov, entries, corr)
    derivation["sanity_checks"] = sanity_checks(table, device)
    return table


# --------------------------------------------------------------------------- sanity checks

# Public reference points from shared/reference/devices.md (others' measurements).
REFERENCES = {
    "pixel": {"what": "WavLM Base Plus (HuBERT Base backbone), 20 s, TFLite fp32 on the CPU of a Galaxy S23 "
                      "Ultra (Snapdragon 8 Gen 2)", "low_ms": 835.0, "high_ms": 983.0},
    "rpi4": {"what": "HAT (Hardware-Aware Transformers) encoders on a Raspberry Pi 4, PyTorch fp32, "
                     "6 layers x 512-640 wide, about 30 tokens", "low_ms": 165.0, "high_ms": 330.0},
}


def sanity_checks(table: LatencyTable, device: Device) -> list[dict]:
    """Predict the reference models on the estimated table and report the gap to the public
    figures. The references run other runtimes on other chips: the gap is a plausibility
    check of the device model, not an accuracy figure."""
    from ..zoo import get_spec

    pred = Predictor(table)
    out = []
    if device.name.startswith("pixel") and table.provenance.dtype == "fp32":
        ref = REFERENCES["pixel"]
        ms = pred.predict_ms(get_spec("hubert-base"), 20.0)
        out.append(_gap("hubert-base, 20 s", ms, ref))
    if device.name in ("rpi4", "rpi5") and table.provenance.dtype == "fp32":
        ref = REFERENCES["rpi4"]
        from ..arch import uniform_layers
        from ..zoo import get_spec as _g

        spec = _g("hubert-base").replace(embed_dim=512, layers=uniform_layers(6, 8, 2048))
        # Only the 6 encoder layers at 30 frames: the text models have no audio frontend.
        layer_sigs = [s for s in block_signatures(spec, 0.62) if s.kind in ("attention", "ffn")]
        ms = sum(pred.block_ms(s)[0] for s in layer_sigs)
        t = layer_sigs[0].dim("t")
        row = _gap(f"6 encoder layers 512 wide, 8 heads, FFN 2048, T={t}", ms, ref)
        if device.name == "rpi5":
            row["note"] = "reference is a Raspberry Pi 4; a Pi 5 is expected to be 2-3x faster"
        out.append(row)
    return out


def _gap(what: str, ms: float, ref: dict) -> dict:
    mid = (ref["low_ms"] + ref["high_ms"]) / 2
    inside = ref["low_ms"] <= ms <= ref["high_ms"]
    return {"predicted": what, "predicted_ms": round(ms, 2), "reference": ref["what"],
            "reference_ms": [ref["low_ms"], ref["high_ms"]], "within_range": inside,
            "ratio_to_reference_mid": round(ms / mid, 3)}
