"""The real measurement: lower a module with the export pipeline, time the artifact on a
device's connection, next to the speed probe where the connection can pair them."""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .cache import MeasurementCache
from .lowering import LoweringPool, lower_one
from .signature import make


# A median of 15 runs of a 1 ms block is 15 ms of timing: one scheduler hiccup on a shared
# machine moves it by 10%. Runs are raised until each timing pass lasts about this long.
MIN_TIMED_MS = 500.0
# The speed probe: an FFN block of mid width, compute-bound like most of a model's time, about
# a millisecond on a laptop core; timed for this long before each pass.
PROBE_SIG = make("ffn", "ffn", e=512, f=2048, t=49, pre=0)
PROBE_TIMED_MS = 250.0
# The probe reference of a journal (RuntimeMeasure.bind) is one timing this long.
PROBE_REFERENCE_TIMED_MS = 1000.0
MAX_RUNS = 400


def runs_for(estimate_ms: float, runs: int, min_timed_ms: float = MIN_TIMED_MS) -> int:
    """Timed runs so the timed part lasts `min_timed_ms` (at least `runs`, at most MAX_RUNS)."""
    if min_timed_ms <= 0 or estimate_ms <= 0:
        return runs
    return max(runs, min(MAX_RUNS, math.ceil(min_timed_ms / estimate_ms)))


class RuntimeMeasure:
    """The real measurement: lower with the export pipeline, time on the connection.

    Calling it (`measure(module, example)`) lowers, times and deletes the artifact. `lower()`
    and `time()` do the two halves, so whole models can be timed in interleaved passes
    (measure_models); `lower_many()` lowers a group in `lower_workers` processes (lowering.py).
    Timing first takes a short estimate (the warm-up plus 3 runs), then `runs_for()` runs, so
    cheap blocks are timed for as long as whole models."""

    def __init__(self, backend: str, dtype: str, threads: int, connection: Any, warmup: int = 3, runs: int = 15,
                 workdir: str | None = None, min_timed_ms: float = MIN_TIMED_MS, lower_workers: int | None = None):
        from ..errors import require_module

        require_module("edgekit.export", "all")
        from ..export import SUFFIX

        self.backend, self.dtype, self.threads, self.connection = backend, dtype, threads, connection
        self.warmup, self.runs, self.min_timed_ms = warmup, runs, min_timed_ms
        self._own_tmp = workdir is None
        self.tmp = Path(workdir or tempfile.mkdtemp(prefix="edgekit-profile-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.suffix = SUFFIX[backend]
        self._probe: tuple[str, float] | None = None  # (path, estimated ms per call)
        self.lowering = LoweringPool(backend, dtype, lower_workers)
        # Paired timing (time_artifact_paired) where the connection has it; see bind().
        self.paired = hasattr(connection, "time_artifact_paired")
        self.probe_reference_ms: float | None = None

    def lower(self, module: Any, example: Any, name: str = "block") -> str:
        return lower_one(self.backend, self.dtype, lambda: (module, example), str(self.tmp / f"{name}{self.suffix}"))

    def lower_many(self, items: list[tuple[Any, str]]) -> list[str]:
        """Lower (build, name) items (build: a picklable BlockJob / ModelJob) at once."""
        return self.lowering.lower([(build, str(self.tmp / f"{name}{self.suffix}")) for build, name in items])

    def close(self) -> None:
        """Stop the lowering workers (they are also stopped when this object is collected) and
        remove the speed probe's artifact (and the scratch folder when this made it)."""
        self.lowering.close()
        if self._probe is not None:
            Path(self._probe[0]).unlink(missing_ok=True)
            self._probe = None
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def bind(self, cache: MeasurementCache) -> None:
        """Time every artifact from now on against the speed probe (paired timing), brought
        to the cache's probe reference; the first binding of a journal measures and records it.

        On a shared VM the machine's speed swings within seconds, by up to 2x on the 2-core
        Intel host (2026-12-07: one model read 32 and 61 ms ten seconds apart, every artifact
        moving together). The probe timed a few milliseconds before and after each slice of
        calls sees the same machine: a model's window medians spread 20.7% raw and 3.1% as a
        ratio to the probe (ONNX fp32, 30 windows). Every entry of one journal (blocks,
        anchors, validation models, in any process) is at the one speed where the probe takes
        the reference. Without a paired connection (SSH, adb) nothing changes: a probe per pass."""
        if not self.paired:
            return
        if cache.probe_reference_ms is None:
            path, est = self._probe_artifact()
            runs = runs_for(est, self.runs, PROBE_REFERENCE_TIMED_MS)
            cache.set_probe_reference(float(self.connection.time_artifact(path, self.warmup, runs, self.threads).median_ms))
        self.probe_reference_ms = cache.probe_reference_ms

    def time(self, path: str) -> Any:
        n = self.runs
        if self.min_timed_ms > 0:
            estimate = self.connection.time_artifact(path, self.warmup, 3, self.threads).median_ms
            n = runs_for(estimate, self.runs, self.min_timed_ms)
        if self.paired and self.probe_reference_ms:
            probe_path, _ = self._probe_artifact()
            got = self.connection.time_artifact_paired(path, probe_path, self.warmup, n, self.threads)
            return got.at_speed(self.probe_reference_ms)
        return self.connection.time_artifact(path, self.warmup, n, self.threads)

    def _probe_artifact(self) -> tuple[str, float]:
        """(path, estimated ms per call) of the speed probe (PROBE_SIG), lowered and estimated
        (warm-up plus 3 runs) on first use."""
        from .modules import build_block_module

        if self._probe is None:
            module, example = build_block_module(PROBE_SIG)
            path = self.lower(module, example, "speed-probe")
            self._probe = (path, float(self.connection.time_artifact(path, self.warmup, 3, self.threads).median_ms))
        return self._probe

    def probe(self) -> float:
        """Median ms of the speed probe right now; with paired timing (bind) the reference
        every timing is already brought to.

        Timed before every timing pass without paired timing: on a shared VM (or a phone that
        heats up) the whole machine runs faster or slower for minutes at a time, and every
        artifact timed in that pass is brought back to the probe's median speed over the profile."""
        if self.paired and self.probe_reference_ms:
            return self.probe_reference_ms
        path, est = self._probe_artifact()
        runs = runs_for(est, self.runs, PROBE_TIMED_MS)
        return float(self.connection.time_artifact(path, self.warmup, runs, self.threads).median_ms)

    def __call__(self, module: Any, example: Any) -> Any:
        path = self.lower(module, example)
        try:
            return self.time(path)
        finally:
            Path(path).unlink(missing_ok=True)


def runtime_measure(backend: str, dtype: str, threads: int, connection: Any, warmup: int = 3, runs: int = 15,
                    workdir: str | None = None, min_timed_ms: float = MIN_TIMED_MS,
                    lower_workers: int | None = None) -> RuntimeMeasure:
    """The real measurement (RuntimeMeasure) for one backend, dtype and thread count."""
    return RuntimeMeasure(backend, dtype, threads, connection, warmup, runs, workdir, min_timed_ms, lower_workers)
