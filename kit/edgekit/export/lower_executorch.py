"""nn.Module -> .pte through torch.export and the XNNPACK partitioner (int8 via PT2E)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import require_module
from .atomic import write_bytes_atomic
from .quantize import QuantRecipe, check_calibration, outside_modules, pt2e_quantize


def lower_executorch(module: nn.Module, example: torch.Tensor, dtype: str, path: Path,
                     calibration: list[torch.Tensor] | None, quant: str,
                     skip: tuple[str, ...] = ()) -> dict:
    require_module("executorch", "executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    recipe = None
    if dtype == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        dynamic = quant == "dynamic"
        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
        quantizer.set_filter_function(outside_modules(skip))
        module = pt2e_quantize(module, example, quantizer, check_calibration(example, calibration, quant))
        recipe = QuantRecipe(quant, "int8 symmetric per-channel", "torchao PT2E + XNNPACKQuantizer",
                             "linear, conv, and (static) activations XNNPACK supports").to_dict()
    ep = torch.export.export(module, (example,), strict=False)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    info = get_delegation_info(edge.exported_program().graph_module)
    program = edge.to_executorch()
    write_bytes_atomic(path, program.buffer)
    # getitem nodes only unpack a delegate's outputs; they are bookkeeping, not compute.
    left = {op: row.non_delegated for op, row in info.delegation_by_operator.items()
            if row.non_delegated and op != "getitem"}
    total = info.num_delegated_nodes + sum(left.values())
    return {"recipe": recipe, "delegated_fraction": info.num_delegated_nodes / total if total else None,
            "partitions": info.num_delegated_subgraphs, "delegated_ops": info.num_delegated_nodes,
            "non_delegated_ops": left}
