"""lower_module: any nn.Module (one float tensor in, one tensor out) -> an artifact file.

The latency-table profiler calls this on single blocks; export_model calls it on whole
encoders. The file is written atomically; its directory is created if needed.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .report import LoweringReport, check_format_dtype

# torch.export deep-copies graphs whose output specs are old-style LeafSpec objects, and torch
# warns at every copy: about 300 warnings in one table's profile, none of which the user can act
# on (the copies are torch's own). Only that message is silenced, and only while lowering.
_TORCH_INTERNAL_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"

# Default int8 mode per format (the measured choice; see docs/benchmarks.md).
DEFAULT_QUANT = {"executorch": "static", "onnx": "static", "tflite": "dynamic"}


def lower_module(module: nn.Module, example: torch.Tensor, fmt: str, dtype: str, path: Path,
                 calibration: list[torch.Tensor] | None = None, *, quant: str | None = None,
                 skip: tuple[str, ...] = ()) -> LoweringReport:
    """Lower `module` for input shaped like `example` to `path` (.pte / .onnx / .tflite).

    dtype int8 uses `quant` ("static" needs `calibration`, "dynamic" does not); the default is
    DEFAULT_QUANT[fmt]. `skip` names submodules (qualified names inside `module`) that int8
    leaves in fp32. Raises ValueError on bad arguments, MissingDependencyError when the
    format's toolchain is not installed.
    """
    check_format_dtype(fmt, dtype)
    if not isinstance(example, torch.Tensor) or example.dtype != torch.float32:
        raise ValueError(f"example must be a float32 torch.Tensor, got {type(example).__name__} "
                         f"{getattr(example, 'dtype', '')}")
    mode = quant or DEFAULT_QUANT[fmt]
    if mode not in ("static", "dynamic"):
        raise ValueError(f"quant {mode!r}: expected static or dynamic")
    if dtype == "fp32":
        mode = None
    path = Path(path)
    module = module.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCH_INTERNAL_WARNING, category=FutureWarning)
        if fmt == "executorch":
            from .lower_executorch import lower_executorch as fn
        elif fmt == "onnx":
            from .lower_onnx import lower_onnx as fn
        else:
            from .lower_tflite import lower_tflite as fn
        info = fn(module, example, dtype, path, calibration, mode, tuple(skip))
    return LoweringReport(format=fmt, dtype=dtype, path=str(path), size_bytes=path.stat().st_size,
                          seconds=time.perf_counter() - t0, **info)
