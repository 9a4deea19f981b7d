"""Lowering the profile's artifacts, several at a time when the machine has the cores.

A profile lowers every block and anchor model before it times them (in interleaved passes), and
on the 2-core dev host the lowering was most of an ExecuTorch table's build time (torch.export,
the XNNPACK partitioner and, for int8, PT2E calibration: about 11 s a block and 90 s an anchor
model). Lowering is single-threaded Python and nothing is timed while it runs, so it is spread
over worker processes, each held to one torch thread. The artifacts are the same files a
sequential run writes; only the wall time changes. Workers are spawned (not forked): the
parent has run torch, and a forked OpenMP runtime can hang.
"""
from __future__ import annotations

import multiprocessing
import os
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Sequence

Build = Callable[[], tuple[Any, Any]]  # -> (module, example input); picklable for the pool


def lower_one(backend: str, dtype: str, build: Build, path: str) -> str:
    """Build the module and lower it the way the export pipeline would for `backend`."""
    from ..export import export_form, lower_module

    module, example = build()
    # The rewrites the export pipeline gives a whole model in this format, so blocks,
    # anchors and exported artifacts run the same kernels.
    module, example = export_form(module, example, backend)
    lower_module(module, example, backend, dtype, path, calibration=[example] if dtype == "int8" else None)
    return path


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def default_workers() -> int:
    """One lowering process per core this process may run on, at most 4 (memory: an int8
    anchor model takes about 2 GB while it is calibrated and lowered)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


class LoweringPool:
    """Lowers (build, path) items, in `workers` processes when there is more than one item."""

    def __init__(self, backend: str, dtype: str, workers: int | None = None):
        self.backend, self.dtype = backend, dtype
        self.workers = default_workers() if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: expected at least 1")
        self._pool: ProcessPoolExecutor | None = None

    def lower(self, items: Sequence[tuple[Build, str]]) -> list[str]:
        if self.workers == 1 or len(items) < 2:
            return [lower_one(self.backend, self.dtype, build, path) for build, path in items]
        futures = [self.submit(build, path) for build, path in items]
        return [f.result() for f in futures]  # type: ignore[union-attr]  (workers > 1: all submitted)

    def submit(self, build: Build, path: str) -> Future | None:
        """Start lowering one item in a worker; None with a single worker (there is no
        worker to run it beside the caller: lower it when it is needed)."""
        if self.workers == 1:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_one_thread)
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool.submit(lower_one, self.backend, self.dtype, build, path)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
