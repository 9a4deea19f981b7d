"""The real measurement: lower a module with the export pipeline, time the artifact on a
device's connection, next to the speed probe where the connection can pair them."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from concurrent.futures import Future, wait
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
    (measure_models); `lower_many()` lowers a group in `lower_workers` processes (lowering.py),
    and `lower_ahead()` starts lowering what a later `lower_many()` will ask for. The first
    timing of an artifact takes a short estimate (the warm-up plus 3 runs) that sets its
    `runs_for()` runs, so cheap blocks are timed for as long as whole models; later passes over
    the same file reuse that count.

    Nothing is timed while a lowering runs: `time()` first waits for any lowering started
    ahead, so the workers never take the cores from a timing."""

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
        self._ahead: dict[Any, tuple[Future, str]] = {}  # build -> (lowering, its path)
        self._ahead_count = 0
        self._runs: dict[str, tuple[tuple[int, int, int], int]] = {}  # path -> (file identity, runs)

    def lower(self, module: Any, example: Any, name: str = "block") -> str:
        return lower_one(self.backend, self.dtype, lambda: (module, example), str(self.tmp / f"{name}{self.suffix}"))

    def lower_many(self, items: list[tuple[Any, str]]) -> list[str]:
        """Lower (build, name) items (build: a picklable BlockJob / ModelJob) at once; an item
        already started by lower_ahead() is waited for (its file keeps its own name)."""
        started = [self._ahead.pop(build, None) for build, _name in items]
        fresh = [(build, str(self.tmp / f"{name}{self.suffix}"))
                 for (build, name), got in zip(items, started) if got is None]
        lowered = iter(self.lowering.lower(fresh))
        return [got[0].result() if got is not None else next(lowered) for got in started]

    def lower_ahead(self, builds: list[Any]) -> int:
        """Start lowering `builds` in the worker processes now, for a later lower_many().

        A profile lowers its blocks a chunk at a time and its anchor models at the end; with
        two workers an odd number of anchor models (each 1-3 minutes for int8 ExecuTorch)
        leaves one core idle for the last of them. Started ahead, they share the workers with
        the first chunk of blocks, and the small blocks fill the gaps. Returns how many were
        started: none with a single worker, where lowering ahead would gain nothing."""
        started = 0
        for build in builds:
            if build in self._ahead:
                continue
            path = str(self.tmp / f"ahead{self._ahead_count}{self.suffix}")
            future = self.lowering.submit(build, path)
            if future is None:
                break
            self._ahead[build] = (future, path)
            self._ahead_count += 1
            started += 1
        return started

    def _settle(self) -> None:
        """Wait until no lowering started ahead is still running (failures surface in
        lower_many, where their results are taken)."""
        if self._ahead:
            wait([future for future, _path in self._ahead.values()])

    def close(self) -> None:
        """Stop the lowering workers (they are also stopped when this object is collected) and
        remove the speed probe's artifact (and the scratch folder when this made it)."""
        self.lowering.close()
        for _future, path in self._ahead.values():
            Path(path).unlink(missing_ok=True)
        self._ahead.clear()
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
            self._settle()
            path, est = self._probe_artifact()
            runs = runs_for(est, self.runs, PROBE_REFERENCE_TIMED_MS)
            cache.set_probe_reference(float(self.connection.time_artifact(path, self.warmup, runs, self.threads).median_ms))
        self.probe_reference_ms = cache.probe_reference_ms

    def time(self, path: str) -> Any:
        self._settle()
        n = self._runs_of(path)
        if self.paired and self.probe_reference_ms:
            probe_path, _ = self._probe_artifact()
            got = self.connection.time_artifact_paired(path, probe_path, self.warmup, n, self.threads)
            return got.at_speed(self.probe_reference_ms)
        return self.connection.time_artifact(path, self.warmup, n, self.threads)

    def _runs_of(self, path: str) -> int:
        """Timed runs for `path`: estimated on its first timing, then kept while the file is
        the same (blocks of successive chunks reuse names; a re-lowered file is a new inode)."""
        if self.min_timed_ms <= 0:
            return self.runs
        try:
            st = os.stat(path)
            ident: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:  # not a local file (a connection that names artifacts its own way)
            ident = None
        known = self._runs.get(path)
        if ident is not None and known is not None and known[0] == ident:
            return known[1]
        estimate = self.connection.time_artifact(path, self.warmup, 3, self.threads).median_ms
        n = runs_for(estimate, self.runs, self.min_timed_ms)
        if ident is not None:
            self._runs[path] = (ident, n)
        return n

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
        self._settle()
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
