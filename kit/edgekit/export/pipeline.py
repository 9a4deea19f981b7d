"""export_model: prepare -> quantize -> lower -> parity gate -> atomic write of artifact + manifest."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import runtime
from ..arch import ArchSpec
from ..errors import UserError
from ..widths import PAD_MULTIPLE, padded_spec
from . import manifest as mf
from .atomic import temp_path_for
from .calibration import SAMPLE_RATE, calibration_inputs, parity_inputs
from .lower import DEFAULT_QUANT, lower_module
from .parity import FP32_REL_TOL, INT8_MIN_COSINE, ParityError, compare
from .prepare import prepare_module, quant_skip
from .report import DTYPES, FORMATS, SUFFIX, LoweringReport, check_format_dtype


@dataclass(frozen=True)
class ExportResult:
    artifact_path: Path
    manifest: dict  # this artifact's manifest entry
    report: LoweringReport
    warnings: tuple[str, ...] = field(default=())


def _source_info(source) -> dict:
    if source is None:
        return {"kind": "in-memory model"}
    text = str(source)
    if os.path.isfile(text):
        return {"kind": "file", "path": os.path.abspath(text), "sha256": mf.sha256_file(text)}
    return {"kind": "preset", "name": text}


def artifact_name(spec: ArchSpec, fmt: str, dtype: str) -> str:
    stem = (spec.name or "model").replace("/", "_").replace(" ", "_")
    return f"{stem}-{dtype}{SUFFIX[fmt]}"


def _reference(model, wrapper, inputs: list[torch.Tensor], keep_heads: bool) -> tuple[list[np.ndarray], float]:
    """Outputs of the caller's model (the truth) and how far the prepared module is from it."""
    refs, worst = [], 0.0
    with torch.no_grad():
        for x in inputs:
            out = model(x, with_predictions=keep_heads)
            ref = torch.stack(out.predictions, dim=1) if keep_heads else out.last_hidden_state
            prep = wrapper(x)
            scale = float(ref.abs().max()) or 1.0
            worst = max(worst, float((prep - ref).abs().max()) / scale)
            refs.append(ref.numpy())
    return refs, worst


def export_model(model, spec: ArchSpec, fmt: str, dtype: str, out_dir: str | os.PathLike, seconds: float = 1.0,
                 calibration_dir: str | os.PathLike | None = None, source=None,
                 fp32_rel_tol: float = FP32_REL_TOL, int8_min_cosine: float = INT8_MIN_COSINE,
                 keep_heads: bool = False, quant: str | None = None, threads: int | None = None,
                 calibration_count: int = 16, parity_count: int = 3) -> ExportResult:
    """Export one format and dtype. Raises ParityError (nothing written) when the gate fails."""
    check_format_dtype(fmt, dtype)
    samples = int(round(seconds * SAMPLE_RATE))
    if samples < spec.frontend.min_samples():
        raise UserError(f"--seconds {seconds:g} gives {samples} samples; {spec.name or 'this model'} needs at "
                        f"least {spec.frontend.min_samples()} ({spec.frontend.min_samples() / SAMPLE_RATE:.3f} s)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    wrapper = prepare_module(model, spec, keep_heads=keep_heads, fmt=fmt, samples=samples)
    held_out = parity_inputs(samples, parity_count)
    refs, prep_err = _reference(model, wrapper, held_out, keep_heads)
    if prep_err > fp32_rel_tol:
        raise UserError(f"prepared module differs from the model by {prep_err:.3g} (relative), expected <= "
                        f"{fp32_rel_tol:g}; suspect stage: prepare (an export rewrite); nothing was written")
    warnings: list[str] = []
    calib, calib_desc, mode = None, None, None
    if dtype == "int8":
        mode = quant or DEFAULT_QUANT[fmt]
        if mode == "static":
            calib, calib_desc, w = calibration_inputs(samples, calibration_dir, calibration_count)
            warnings.extend(w)
    example = held_out[0]
    final = out_dir / artifact_name(spec, fmt, dtype)
    tmp = temp_path_for(final)
    try:
        report = lower_module(wrapper, example, fmt, dtype, tmp, calibration=calib, quant=mode,
                              skip=quant_skip(spec))
        runner = runtime.load(tmp, threads=threads)
        outs = [runner.run(x.numpy()) for x in held_out]
        parity = compare(refs, outs, dtype, fp32_rel_tol, int8_min_cosine)
        if not parity.passed:
            stage = "lower (the backend changes the numerics)" if dtype == "fp32" else \
                f"quantize ({mode} int8: try --calibration with real speech, or the other quantization mode)"
            raise ParityError(parity, stage, fmt)
        entry = {
            "artifact": final.name, "format": fmt, "dtype": dtype,
            "arch": spec.to_dict(), "source": _source_info(source),
            "quantization": None if dtype == "fp32" else {**(report.recipe or {}), "calibration": calib_desc,
                                                           "kept_fp32": list(quant_skip(spec))},
            "input": {"name": "wave", "sample_rate": SAMPLE_RATE, "samples": samples, "seconds": samples / SAMPLE_RATE,
                      "dtype": "float32", "layout": "[1, samples] mono waveform",
                      "window": "fixed: on-device encoders run on fixed windows; pad or cut audio to this length"},
            "output": _output_spec(spec, samples, keep_heads, outs[0].shape),
            "parity": parity.to_dict(), "prepare_rel_err": prep_err,
            # What the artifact runs when prepare padded off-tile widths with zero channels
            # (same outputs, faster kernels: edgekit/widths.py).
            "padded_widths": _padding(spec, fmt),
            "delegation": {"delegated_fraction": report.delegated_fraction, "partitions": report.partitions,
                           "delegated_ops": report.delegated_ops, "non_delegated_ops": report.non_delegated_ops},
            "size_bytes": tmp.stat().st_size, "sha256": mf.sha256_file(tmp),
            "lowering_seconds": round(report.seconds, 2), "tools": mf.tool_versions(), "created": mf.now_utc(),
        }
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    try:
        mf.add_entry(out_dir, final.name, entry)
    except BaseException:
        # An artifact without its manifest entry is a half result: take it back out.
        with contextlib.suppress(FileNotFoundError):
            final.unlink()
        raise
    report = LoweringReport(**{**report.__dict__, "path": str(final)})
    return ExportResult(final, entry, report, tuple(warnings))


def _padding(spec: ArchSpec, fmt: str) -> dict | None:
    runs = padded_spec(spec, PAD_MULTIPLE[fmt])
    return None if runs is spec else {"multiple": PAD_MULTIPLE[fmt], "arch": runs.to_dict()}


def _output_spec(spec: ArchSpec, samples: int, keep_heads: bool, shape: tuple) -> dict:
    frames = spec.output_frames(samples)
    if keep_heads:
        expect = (1, len(shape) > 1 and shape[1], frames, spec.heads.target_dim)
        layout = "[1, heads, frames, target_dim] prediction heads"
    else:
        expect = (1, frames, spec.embed_dim)
        layout = "[1, frames, dim] last hidden state"
    if tuple(shape) != tuple(expect):
        raise RuntimeError(f"internal error: artifact output {tuple(shape)} but ArchSpec predicts {expect}")
    return {"name": "features", "frames": frames, "dim": int(shape[-1]), "shape": list(shape),
            "frame_rate_hz": spec.frame_rate_hz(), "dtype": "float32", "layout": layout}


__all__ = ["DTYPES", "FORMATS", "ExportResult", "artifact_name", "export_model"]
