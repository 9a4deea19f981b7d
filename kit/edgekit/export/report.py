"""LoweringReport: what a lowering produced, for manifests and latency tables."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

FORMATS = ("executorch", "onnx", "tflite")
DTYPES = ("fp32", "int8")
SUFFIX = {"executorch": ".pte", "onnx": ".onnx", "tflite": ".tflite"}
# Bumped whenever an export rewrite (prepare.py) changes what a module lowers to: latency
# caches are kept per revision, so a block timed under older rewrites is never priced as
# what today's export produces. 2: attention rewrite in blocks, channels-last ExecuTorch convs.
# 3: ExecuTorch pads off-tile widths (widths.PAD_REVISION).
REWRITES_REVISION = 3


@dataclass(frozen=True)
class LoweringReport:
    format: str
    dtype: str
    path: str
    size_bytes: int
    seconds: float  # wall time of the lowering itself
    recipe: dict | None = None  # QuantRecipe.to_dict() for int8, None for fp32
    # ExecuTorch: share of the graph's operators that XNNPACK runs, and how many delegate
    # partitions it was cut into. None where a backend does not expose it.
    delegated_fraction: float | None = None
    partitions: int | None = None
    delegated_ops: int | None = None
    non_delegated_ops: dict = field(default_factory=dict)  # op name -> count left on portable kernels
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.delegated_fraction is not None and not 0.0 <= self.delegated_fraction <= 1.0:
            raise ValueError(f"delegated_fraction {self.delegated_fraction} outside [0, 1]")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def check_format_dtype(fmt: str, dtype: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported; expected one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
