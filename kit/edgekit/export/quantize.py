"""PT2E int8 quantization shared by the ExecuTorch and TFLite lowerings.

Both backends take a torch.export'ed graph, annotate it with a backend quantizer, observe
calibration inputs, and convert. Only the quantizer differs (XNNPACKQuantizer for ExecuTorch,
litert-torch's PT2EQuantizer for TFLite); ONNX quantizes the exported .onnx file instead
(see lower_onnx.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

QUANT_MODES = ("static", "dynamic")


@dataclass(frozen=True)
class QuantRecipe:
    """What int8 means for one artifact: written into the manifest."""

    mode: str  # static: calibrated activations; dynamic: per-call activation ranges
    weights: str  # per-channel symmetric int8 everywhere edgekit quantizes
    tool: str
    ops: str = "all supported"

    def __post_init__(self) -> None:
        if self.mode not in QUANT_MODES:
            raise ValueError(f"quantization mode {self.mode!r}: expected one of {', '.join(QUANT_MODES)}")

    def to_dict(self) -> dict:
        return {"mode": self.mode, "weights": self.weights, "tool": self.tool, "ops": self.ops}


def check_calibration(example: torch.Tensor, calibration: list[torch.Tensor] | None, mode: str) -> list[torch.Tensor]:
    """Static int8 needs calibration inputs shaped like the example; dynamic needs none."""
    if mode == "dynamic":
        return list(calibration or [example])[:1]
    if not calibration:
        raise ValueError("static int8 needs calibration inputs; pass calibration=[tensor, ...] "
                         "(edgekit.export.calibration builds them from audio)")
    for i, c in enumerate(calibration):
        if tuple(c.shape) != tuple(example.shape):
            raise ValueError(f"calibration input {i} has shape {tuple(c.shape)}, expected {tuple(example.shape)} "
                             "like the example input")
    return list(calibration)


def pt2e_quantize(module: nn.Module, example: torch.Tensor, quantizer, calibration: list[torch.Tensor],
                  fold_quantize: bool = True) -> nn.Module:
    """export -> prepare_pt2e -> run calibration -> convert_pt2e; returns the converted GraphModule."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(module, (example,), strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


# Normalisation arithmetic stays fp32 under int8: it squares activations and divides by their
# spread, so one int8 scale per tensor either clips the squares or rounds the variance of
# quiet frames to zero. Measured on hubert-base (random weights), ExecuTorch static int8 with
# the rewritten norms quantized: per-frame cosine 0.843; the norms cost about 1% of the MACs.
FP32_MODULE_TYPES = ("LayerNorm", "GroupNorm", "DelegatedLayerNorm", "DelegatedGroupNorm",
                     "LinearLayerNorm", "LinearGroupNorm", "ChannelsLastGroupNorm")


def _type_name(t) -> str:
    return (t if isinstance(t, str) else getattr(t, "__qualname__", str(t))).rsplit(".", 1)[-1].strip("'>")


def outside_modules(scopes: tuple[str, ...], types: tuple[str, ...] = FP32_MODULE_TYPES):
    """A PT2E node filter: True for nodes traced outside every module named in `scopes` and
    outside every module whose class name is in `types`."""

    def keep(node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        for path, typ in stack.values():
            if any(path == s or path.startswith(s + ".") for s in scopes):
                return False
            if _type_name(typ) in types:
                return False
        return True

    return keep
