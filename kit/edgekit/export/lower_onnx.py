"""nn.Module -> .onnx with the dynamo exporter; int8 with onnxruntime's quantization tools.

int8 modes (a measured decision, see toolchains.md and docs/benchmarks.md):
- dynamic: quant_pre_process, then quantize_dynamic on MatMul only. Quantizing the convs too
  measured slower than fp32 in ONNX Runtime, so they stay fp32.
- static (the default): quant_pre_process, then QDQ quantize_static with calibration inputs,
  per-channel 7-bit int8 weights and uint8 activations, convs included (measured fastest on
  x86 without VNNI: hubert-base 1.78x fp32, against 1.40x for dynamic).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import require_module
from .atomic import write_bytes_atomic
from .quantize import QuantRecipe, check_calibration

INPUT_NAME = "wave"
OUTPUT_NAME = "features"


def _export_fp32(module: nn.Module, example: torch.Tensor, out: Path) -> None:
    require_module("onnxscript", "onnx")
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        raw = os.path.join(tmp, "model.onnx")
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], optimize=True, verbose=False)
        program.save(raw, external_data=False)
        model = onnx.load(raw)
    # One self-contained file: the artifact must be copyable as is.
    write_bytes_atomic(out, model.SerializeToString())


def _nodes_in_scopes(path: Path, scopes: tuple[str, ...]) -> list[str]:
    """Names of nodes the exporter traced inside any of the module `scopes` (its name_scopes
    metadata lists the qualified module names a node came from)."""
    if not scopes:
        return []
    import onnx

    model = onnx.load(str(path))
    out = []
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.name_scopes", "")
        if any(f"'{s}'" in meta for s in scopes):
            out.append(node.name)
    return out


def _activation_matmuls(path: Path) -> list[str]:
    """MatMul nodes neither of whose inputs is a weight (an initializer or a Constant)."""
    import onnx

    model = onnx.load(str(path))
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


class _Reader:
    """onnxruntime CalibrationDataReader over a list of tensors."""

    def __init__(self, name: str, inputs: list[torch.Tensor]):
        self._items = iter([{name: x.detach().cpu().numpy().astype(np.float32)} for x in inputs])

    def get_next(self):
        return next(self._items, None)


def lower_onnx(module: nn.Module, example: torch.Tensor, dtype: str, path: Path,
               calibration: list[torch.Tensor] | None, quant: str,
               skip: tuple[str, ...] = ()) -> dict:
    require_module("onnx", "onnx")
    require_module("onnxruntime", "onnx")
    if dtype == "fp32":
        _export_fp32(module, example, path)
        return {"recipe": None}
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = check_calibration(example, calibration, quant)
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-q-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "int8.onnx"
        _export_fp32(module, example, fp32)
        # Optimisation would fuse MatMul+Add into Gemm, which quantize_dynamic does not
        # handle, leaving every Linear in fp32; shape inference is what we need from it.
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True, skip_optimization=True)
        exclude = _nodes_in_scopes(fp32, skip)  # pre-processing drops the scope metadata
        if quant == "dynamic":
            # reduce_range: 7-bit weights. On x86 without VNNI, ONNX Runtime's u8 x s8 kernels
            # (vpmaddubsw) saturate 16-bit pair sums with full-range weights; measured on
            # hubert-base, per-tensor full range gave cosine 0.986. Attention's activation x
            # activation MatMuls stay fp32: their operands have no calibrated range to lean on.
            quantize_dynamic(str(pre), str(q), op_types_to_quantize=["MatMul"], per_channel=True,
                             reduce_range=True, nodes_to_exclude=exclude + _activation_matmuls(pre),
                             weight_type=QuantType.QInt8)
            recipe = QuantRecipe("dynamic", "int8 symmetric per-channel, 7-bit range",
                                 "onnxruntime quantize_dynamic",
                                 "weight MatMuls only (convs stay fp32: quantizing them measured slower)")
        else:
            # uint8 activations with int8 weights (U8S8) and 7-bit weights: on x86 without VNNI,
            # ONNX Runtime runs S8S8 QDQ through slow fallbacks (hubert-base 290 ms against
            # 121 ms fp32) and full-range U8S8 saturates vpmaddubsw's 16-bit pair sums
            # (cosine 0.961); U8S8 with reduce_range measured 62 ms against 110 ms fp32,
            # cosine 0.998. Activation x activation MatMuls (attention) stay fp32.
            quantize_static(str(pre), str(q), _Reader(INPUT_NAME, calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude + _activation_matmuls(pre),
                            op_types_to_quantize=["MatMul", "Gemm", "Conv"])
            recipe = QuantRecipe("static", "int8 symmetric per-channel, 7-bit range; uint8 activations",
                                 "onnxruntime quantize_static (QDQ, U8S8)", "weight MatMuls, Gemm, Conv")
        write_bytes_atomic(path, q.read_bytes())
    return {"recipe": recipe.to_dict()}
