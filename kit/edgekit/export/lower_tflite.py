"""nn.Module -> .tflite with litert-torch; int8 through litert-torch's PT2E quantizer."""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import require_module
from .atomic import write_bytes_atomic
from .quantize import QuantRecipe, check_calibration, outside_modules, pt2e_quantize


def lower_tflite(module: nn.Module, example: torch.Tensor, dtype: str, path: Path,
                 calibration: list[torch.Tensor] | None, quant: str,
                     skip: tuple[str, ...] = ()) -> dict:
    litert_torch = require_module("litert_torch", "tflite")
    recipe = None
    kwargs = {}
    if dtype == "int8":
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = _skipping_quantizer(PT2EQuantizer, skip).set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=quant == "dynamic"))
        module = pt2e_quantize(module, example, quantizer, check_calibration(example, calibration, quant),
                               fold_quantize=False)
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
        recipe = QuantRecipe(quant, "int8 symmetric per-channel", "litert-torch PT2EQuantizer").to_dict()
    # litert-torch prints its progress on stdout, which would corrupt `edgekit export --json`.
    with contextlib.redirect_stdout(sys.stderr):
        edge = litert_torch.convert(module, (example,), **kwargs)
        with tempfile.TemporaryDirectory(prefix="edgekit-tflite-") as tmp:
            raw = Path(tmp) / "model.tflite"
            edge.export(str(raw))
            write_bytes_atomic(path, raw.read_bytes())
    return {"recipe": recipe}


def _skipping_quantizer(base: type, skip: tuple[str, ...]):
    """litert-torch's PT2EQuantizer with nodes inside `skip` modules left unannotated.

    Its own set_module_name(name, None) asserts, and its module-name filter rewrites "_" to "."
    in torch.export's stack keys, so it cannot match names such as feature_extractor. The
    annotation hooks (pinned litert-torch 0.10) take a node filter; ours is ANDed in.
    """
    keep = outside_modules(skip)

    def both(filter_fn):
        return keep if filter_fn is None else (lambda n: filter_fn(n) and keep(n))

    class SkippingQuantizer(base):
        def _annotate_all_static_patterns(self, model, config, filter_fn=None):
            return super()._annotate_all_static_patterns(model, config, both(filter_fn))

        def _annotate_all_dynamic_patterns(self, model, config, filter_fn=None):
            return super()._annotate_all_dynamic_patterns(model, config, both(filter_fn))

    return SkippingQuantizer()
