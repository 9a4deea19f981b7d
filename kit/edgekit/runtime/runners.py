"""One Runner per artifact format, behind `load(path)`.

Imports here are deliberately lazy and local: onnxruntime for .onnx, ai_edge_litert for
.tflite, executorch (which brings torch) for .pte. Nothing else of edgekit is imported, so the
package can be copied onto a device on its own.
"""
from __future__ import annotations

import importlib
import os
import time as _time

import numpy as np

from .timing import PairedTiming, TimingStats, peak_rss_mb, summarize

# suffix -> (format name, importable module, pip extra that installs it)
_RUNTIMES = {
    ".onnx": ("onnx", "onnxruntime", "onnx"),
    ".tflite": ("tflite", "ai_edge_litert.interpreter", "tflite"),
    ".pte": ("executorch", "executorch.runtime", "executorch"),
}


class RuntimeLoadError(ValueError):
    """An artifact that cannot be loaded or run as given (one line: found / expected / fix)."""


class MissingRuntimeError(RuntimeLoadError):
    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed; install it with: pip install \"edgekit[{extra}]\"")
        self.module, self.extra = module, extra


def supported_suffixes() -> tuple[str, ...]:
    return tuple(_RUNTIMES)


def runtime_for(path: str | os.PathLike) -> tuple[str, str, str]:
    """(format, module, extra) for an artifact path, by suffix."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in _RUNTIMES:
        raise RuntimeLoadError(f"{path}: unknown artifact suffix {suffix!r}; expected one of "
                               f"{', '.join(_RUNTIMES)} (an edgekit export output)")
    return _RUNTIMES[suffix]


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingRuntimeError(module.split(".")[0], extra) from None


class Runner:
    """A loaded artifact: `run(x)` one window, `time(...)` many.

    `threads=None` leaves the runtime's default thread count.
    """

    format = "?"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, allow_spinning: bool = True):
        if threads is not None and threads < 1:
            raise RuntimeLoadError(f"threads={threads}: expected a positive thread count")
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise RuntimeLoadError(f"{self.path}: no such artifact file")
        self.threads = threads
        self.allow_spinning = allow_spinning
        t0 = _time.perf_counter()
        self._load()
        self.load_ms = (_time.perf_counter() - t0) * 1e3

    # -- per-format -----------------------------------------------------------------------
    def _load(self) -> None:  # pragma: no cover - abstract
        raise RuntimeError("internal error: Runner subclass without _load")

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise RuntimeError("internal error: Runner subclass without _run")

    input_shape: tuple[int, ...] = ()

    # -- shared ---------------------------------------------------------------------------
    @property
    def input_samples(self) -> int:
        return int(self.input_shape[-1])

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == len(self.input_shape) - 1:
            x = x[None]
        if tuple(x.shape) != tuple(self.input_shape):
            raise RuntimeLoadError(f"input shape {tuple(x.shape)} does not match the artifact's fixed input "
                                   f"{tuple(self.input_shape)}; cut or pad the audio to {self.input_samples} samples")
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [1, samples] (or [samples]) -> output of the artifact as numpy."""
        return np.asarray(self._run(self._check(x)))

    def time(self, warmup: int = 5, runs: int = 30, threads: int | None = None,
             x: np.ndarray | None = None, seed: int = 0) -> TimingStats:
        """Time `runs` calls after `warmup` untimed ones; with `threads` the runtime is reloaded
        with that thread count first (the reload is what `load_ms` then reports)."""
        if runs < 1 or warmup < 0:
            raise RuntimeLoadError(f"runs={runs}, warmup={warmup}: expected runs >= 1 and warmup >= 0")
        if threads is not None and threads != self.threads:
            if threads < 1:
                raise RuntimeLoadError(f"threads={threads}: expected a positive thread count")
            self.threads = threads
            t0 = _time.perf_counter()
            self._load()
            self.load_ms = (_time.perf_counter() - t0) * 1e3
        x = self._example(x, seed)
        for _ in range(warmup):
            self._run(x)
        samples = [self._timed(x) for _ in range(runs)]
        return summarize(samples, warmup=warmup, threads=self.threads, load_ms=self.load_ms,
                         peak_rss_mb=peak_rss_mb())

    def time_against(self, probe: "Runner", warmup: int = 3, runs: int = 15, slice_ms: float = 20.0,
                     burst_ms: float = 4.0, x: np.ndarray | None = None, seed: int = 0) -> PairedTiming:
        """Time `runs` calls of this artifact with `probe` (a small artifact of the same
        runtime) timed in between, so each call can be brought to one machine speed.

        The calls are grouped into slices of about `slice_ms`, and a burst of about `burst_ms`
        of probe calls is timed before the first slice and after every slice. A shared VM's
        speed swings within seconds (on the 2-core Intel host a model read 32 and 61 ms ten
        seconds apart), which a probe timed once per pass cannot follow; one a few
        milliseconds away sees the same machine. Both runners must be loaded with the same
        threads, and for ONNX Runtime with allow_spinning=False: spinning pool threads of one
        session take the cores from the other's calls."""
        if runs < 1 or warmup < 0:
            raise RuntimeLoadError(f"runs={runs}, warmup={warmup}: expected runs >= 1 and warmup >= 0")
        x = self._example(x, seed)
        px = probe._example(None, seed)
        for _ in range(max(warmup, 1)):
            self._run(x)
            probe._run(px)
        per_slice = max(1, round(slice_ms / max(self._timed(x), 1e-3)))
        per_burst = max(1, round(burst_ms / max(probe._timed(px), 1e-3)))

        def burst() -> float:
            return float(np.median([probe._timed(px) for _ in range(per_burst)]))

        samples: list[float] = []
        around: list[float] = []
        before = burst()
        while len(samples) < runs:
            got = [self._timed(x) for _ in range(min(per_slice, runs - len(samples)))]
            after = burst()
            samples += got
            around += [(before + after) / 2] * len(got)
            before = after
        stats = summarize(samples, warmup=warmup, threads=self.threads, load_ms=self.load_ms,
                          peak_rss_mb=peak_rss_mb())
        return PairedTiming(stats, tuple(samples), tuple(around))

    def _example(self, x: np.ndarray | None, seed: int) -> np.ndarray:
        if x is None:
            x = np.random.default_rng(seed).standard_normal(self.input_shape).astype(np.float32) * 0.1
        return self._check(x)

    def _timed(self, x: np.ndarray) -> float:
        t0 = _time.perf_counter()
        self._run(x)
        return (_time.perf_counter() - t0) * 1e3


class OnnxRunner(Runner):
    format = "onnx"

    def _load(self) -> None:
        ort = _import("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if not self.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._sess = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(f"{self.path}: onnxruntime could not load it: {' '.join(str(e).split())[:300]}") from None
        inp = self._sess.get_inputs()[0]
        if any(not isinstance(d, int) for d in inp.shape):
            raise RuntimeLoadError(f"{self.path}: input {inp.name} has symbolic shape {inp.shape}; "
                                   "edgekit artifacts have a fixed window (re-export with edgekit export)")
        self._input_name = inp.name
        self.input_shape = tuple(inp.shape)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._input_name: x})[0]


class TfliteRunner(Runner):
    format = "tflite"

    def _load(self) -> None:
        interp_mod = _import("ai_edge_litert.interpreter", "tflite")
        try:
            self._interp = interp_mod.Interpreter(model_path=self.path, num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise RuntimeLoadError(f"{self.path}: LiteRT could not load it: {' '.join(str(e).split())[:300]}") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"])


class ExecuTorchRunner(Runner):
    format = "executorch"

    def _load(self) -> None:
        rt = _import("executorch.runtime", "executorch")
        self._torch = importlib.import_module("torch")  # executorch depends on torch
        if self.threads is not None:
            from executorch.extension.pybindings import portable_lib
            # XNNPACK's threadpool is process-wide in ExecuTorch's Python bindings. A reset
            # rebuilds it and logs a line; a profile loads about 700 artifacts at one thread
            # count, so it is reset only when the count changes.
            if portable_lib._threadpool_get_thread_count() != self.threads:
                portable_lib._unsafe_reset_threadpool(self.threads)
        try:
            program = rt.Runtime.get().load_program(self.path)
            self._method = program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise RuntimeLoadError(f"{self.path}: ExecuTorch could not load it: {' '.join(str(e).split())[:300]}") from None
        meta = self._method.metadata.input_tensor_meta(0)
        self.input_shape = tuple(int(d) for d in meta.sizes())

    def _run(self, x: np.ndarray) -> np.ndarray:
        # The bindings clone each output out of the method's memory as a torch tensor. A clone
        # of more than 32768 elements runs as a torch OpenMP region, whose worker then spins
        # for milliseconds and takes a core from XNNPACK's next run: a hubert-base FFN block
        # ran in 7.0 ms with 2 threads instead of 3.9 ms. With torch at one thread the clone
        # (a few microseconds) stays on this thread and XNNPACK's threads have the cores.
        torch = self._torch
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = self._method.execute([torch.from_numpy(x)])
        finally:
            torch.set_num_threads(n)
        return out[0].numpy()


# Bumped for a format whenever its runner's timing changes what the same artifact measures:
# latency caches are kept per revision (edgekit.latency.cache). executorch 2: outputs cloned
# with torch at one thread (ExecuTorchRunner._run). All formats: profiles time every artifact
# against the speed probe (Runner.time_against; ONNX Runtime with spinning off), so its entries
# are at one probe speed and a journal records that speed.
TIMING_REVISION = {"onnx": 2, "tflite": 2, "executorch": 3}

_RUNNERS = {"onnx": OnnxRunner, "tflite": TfliteRunner, "executorch": ExecuTorchRunner}


def load(path: str | os.PathLike, threads: int | None = None, allow_spinning: bool = True) -> Runner:
    """An artifact path -> a Runner for its format (chosen by suffix).

    allow_spinning=False makes ONNX Runtime's pool threads sleep as soon as an operator ends
    instead of spinning for more work (how two sessions are timed in turn, Runner.time_against);
    the other runtimes have no such switch and ignore it."""
    fmt, _, _ = runtime_for(path)
    return _RUNNERS[fmt](path, threads=threads, allow_spinning=allow_spinning)
