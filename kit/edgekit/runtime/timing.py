"""Timing statistics for repeated inference runs (stdlib + numpy only: ships to devices)."""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    """Latency summary in milliseconds over `n` timed runs (after warm-up)."""

    mean_ms: float
    median_ms: float
    trimmed_mean_ms: float  # 10% cut from each end, as ExecuTorch's minibench reports
    p10_ms: float
    p90_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    n: int
    warmup: int = 0
    threads: int | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"TimingStats needs at least one timed run, got n={self.n}")

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"median {self.median_ms:.2f} ms, trimmed mean {self.trimmed_mean_ms:.2f} ms, "
                f"p10 {self.p10_ms:.2f} / p90 {self.p90_ms:.2f} ms, std {self.std_ms:.2f} ms over {self.n} runs")


@dataclass(frozen=True)
class PairedTiming:
    """An artifact timed next to a speed probe (Runner.time_against): its own stats, each
    timed call, and per call the probe's median ms around it."""

    stats: TimingStats
    samples_ms: tuple[float, ...]
    probe_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.samples_ms) != len(self.probe_ms) or not self.samples_ms:
            raise ValueError(f"PairedTiming needs one probe reading per call, got {len(self.samples_ms)} calls "
                             f"and {len(self.probe_ms)} readings")
        if min(self.probe_ms) <= 0:
            raise ValueError("PairedTiming: probe readings must be positive")

    def at_speed(self, probe_reference_ms: float) -> TimingStats:
        """The stats with every call brought to the machine speed at which the probe takes
        `probe_reference_ms`: call * reference / probe reading around it."""
        v = [t * probe_reference_ms / q for t, q in zip(self.samples_ms, self.probe_ms)]
        s = self.stats
        return summarize(v, warmup=s.warmup, threads=s.threads, load_ms=s.load_ms, peak_rss_mb=s.peak_rss_mb)


def trimmed_mean(values: np.ndarray, cut: float = 0.1) -> float:
    """Mean after dropping floor(cut * n) values from each end (all values when n is small)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    k = int(cut * len(v))
    return float(v[k:len(v) - k].mean())


def summarize(samples_ms, warmup: int = 0, threads: int | None = None, load_ms: float | None = None,
              peak_rss_mb: float | None = None) -> TimingStats:
    """Latency samples (ms) -> TimingStats."""
    v = np.asarray(list(samples_ms), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize() needs at least one latency sample")
    return TimingStats(mean_ms=float(v.mean()), median_ms=float(np.median(v)), trimmed_mean_ms=trimmed_mean(v),
                       p10_ms=float(np.percentile(v, 10)), p90_ms=float(np.percentile(v, 90)),
                       std_ms=float(v.std()), min_ms=float(v.min()), max_ms=float(v.max()), n=int(v.size),
                       warmup=warmup, threads=threads, load_ms=load_ms, peak_rss_mb=peak_rss_mb)


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (None where the platform cannot say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def cpu_info() -> dict:
    """What a device measurement should carry: core count and, on Linux, governor and frequency."""
    info: dict = {"cpu_count": os.cpu_count()}
    base = "/sys/devices/system/cpu/cpu0/cpufreq"
    for key, name in (("governor", "scaling_governor"), ("cur_khz", "scaling_cur_freq")):
        try:
            with open(os.path.join(base, name)) as f:
                info[key] = f.read().strip()
        except OSError:
            pass
    return info
