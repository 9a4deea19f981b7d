"""Load and time any edgekit artifact (.pte, .onnx, .tflite).

This package imports only the standard library, numpy and the one runtime an artifact needs
(executorch, onnxruntime or ai_edge_litert), never the rest of edgekit or torch for .onnx and
.tflite: the same files are copied to a Raspberry Pi and run there.
"""
from .runners import (TIMING_REVISION, MissingRuntimeError, Runner, RuntimeLoadError, load, runtime_for,
                      supported_suffixes)
from .timing import PairedTiming, TimingStats, summarize

__all__ = ["TIMING_REVISION", "MissingRuntimeError", "PairedTiming", "Runner", "RuntimeLoadError", "TimingStats", "load",
           "runtime_for", "summarize", "supported_suffixes"]
