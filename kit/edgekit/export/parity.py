"""The parity gate: the artifact, run in its own runtime, against the PyTorch model."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError

FP32_REL_TOL = 1e-4
INT8_MIN_COSINE = 0.99


@dataclass(frozen=True)
class ParityResult:
    dtype: str
    inputs: int
    max_abs_err: float
    output_scale: float  # max |reference|
    rel_err: float  # max_abs_err / output_scale
    cosine_mean: float  # mean over frames (and inputs) of the per-frame cosine similarity
    cosine_min: float
    threshold: dict
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"max abs err {self.max_abs_err:.3g} / output scale {self.output_scale:.3g} = {self.rel_err:.3g}, "
                f"per-frame cosine mean {self.cosine_mean:.5f} (min {self.cosine_min:.5f})")


class ParityError(UserError):
    """The artifact does not match the model; nothing was written."""

    def __init__(self, result: ParityResult, stage: str, fmt: str):
        want = (f"rel err <= {result.threshold['fp32_rel_tol']:g}" if result.dtype == "fp32"
                else f"cosine >= {result.threshold['int8_min_cosine']:g}")
        super().__init__(f"parity gate failed for {fmt} {result.dtype}: {result.line()}; expected {want}; "
                         f"suspect stage: {stage}; no artifact was written")
        self.result, self.stage = result, stage


def frame_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine similarity per frame (vectors along the last axis)."""
    r = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    o = out.reshape(-1, out.shape[-1]).astype(np.float64)
    num = (r * o).sum(-1)
    den = np.linalg.norm(r, axis=-1) * np.linalg.norm(o, axis=-1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)


def compare(refs: list[np.ndarray], outs: list[np.ndarray], dtype: str, fp32_rel_tol: float = FP32_REL_TOL,
            int8_min_cosine: float = INT8_MIN_COSINE) -> ParityResult:
    if len(refs) != len(outs) or not refs:
        raise RuntimeError("internal error: parity needs one artifact output per reference output")
    for r, o in zip(refs, outs):
        if r.shape != o.shape:
            raise UserError(f"artifact output shape {o.shape} differs from PyTorch's {r.shape}; "
                            "suspect stage: lower")
    err = max(float(np.abs(r - o).max()) for r, o in zip(refs, outs))
    scale = max(float(np.abs(r).max()) for r in refs)
    cos = np.concatenate([frame_cosines(r, o) for r, o in zip(refs, outs)])
    rel = err / scale if scale > 0 else err
    if not np.isfinite(rel) or not np.all(np.isfinite(cos)):
        rel, cos = float("inf"), np.array([-1.0])
    passed = rel <= fp32_rel_tol if dtype == "fp32" else float(cos.mean()) >= int8_min_cosine
    return ParityResult(dtype=dtype, inputs=len(refs), max_abs_err=err, output_scale=scale, rel_err=rel,
                        cosine_mean=float(cos.mean()), cosine_min=float(cos.min()),
                        threshold={"fp32_rel_tol": fp32_rel_tol, "int8_min_cosine": int8_min_cosine},
                        passed=bool(passed))
