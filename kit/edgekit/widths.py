"""Width padding: which widths an export rounds up, per format, and the ArchSpec it then runs.

Pruning (DPHuBERT, HJ-Pruning) leaves widths such as 216 or 504 channels. XNNPACK's fp32
kernels on x86 work in tiles of 16 output channels, and in ExecuTorch's channels-last conv
form off-tile widths fall off that path: measured on the 2-core AVX2 dev host
(benchmarks/width_padding.py), hubert-base's first k=3 extractor conv took 41.7 ms at 504
channels and 23.1 ms padded to 512 (216 -> 224: 12.6 -> 7.8 ms), and a pruned hubert-base ran
1.16x faster padded. ONNX Runtime and TFLite ran the padded widths at 0.94-1.16x the unpadded
speed, so only ExecuTorch pads. Zero channels are exact, so the export pads such widths up
(export/pad_widths.py) and the latency predictor prices the padded architecture, which is
what the artifact runs.

What is padded: every extractor conv's output channels except the last (the last conv feeds
the feature LayerNorm, whose statistics zero channels would change) when the extractor has no
per-frame LayerNorm between convs, and every FFN's hidden width. Zero channels stay zero
through the per-channel GroupNorm and GELU, and the next layer's weights for them are zero.

This module imports neither torch nor the exporters: the search prices padded specs in its
hot loop.
"""
from __future__ import annotations

from .arch import ArchSpec, ConvLayer, LayerSpec, WaveformFrontend

# Per format: the multiple widths are padded to (None: left as they are); docs/benchmarks.md.
PAD_MULTIPLE: dict[str, int | None] = {"executorch": 16, "onnx": None, "tflite": None}
# The export rewrites revision (export/report.py REWRITES_REVISION) that began padding: latency
# tables profiled under an older one priced unpadded widths.
PAD_REVISION = 3


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def frontend_paddable(frontend) -> bool:
    """Can this frontend's conv widths be padded exactly? Not with a per-frame LayerNorm
    after each conv ("layer" norm): zero channels would change its mean and variance."""
    return isinstance(frontend, WaveformFrontend) and frontend.norm != "layer"


def padded_ffn(ffn_dim: int, multiple: int | None) -> int:
    """An FFN's hidden width as an export padding to `multiple` runs it (0, pruned away, stays 0)."""
    return round_up(ffn_dim, multiple) if multiple and multiple > 1 else ffn_dim


def padded_conv_widths(frontend, multiple: int | None) -> list[tuple[int, int]]:
    """(c_in, c_out) of each extractor conv as an export padding to `multiple` runs it: every
    output but the last rounded up, when the frontend can be padded at all."""
    pairs, c_in = [], 1
    pad = bool(multiple and multiple > 1 and frontend_paddable(frontend))
    for i, c in enumerate(frontend.layers):
        c_out = round_up(c.channels, multiple) if pad and i < len(frontend.layers) - 1 else c.channels
        pairs.append((c_in, c_out))
        c_in = c_out
    return pairs


def padded_spec(spec: ArchSpec, multiple: int | None) -> ArchSpec:
    """The architecture an export padding widths to `multiple` produces (spec itself when
    nothing changes, so callers can memoise on identity)."""
    if not multiple or multiple <= 1:
        return spec
    changes = {}
    fe = spec.frontend
    if frontend_paddable(fe):
        convs = tuple(ConvLayer(c_out, c.kernel, c.stride)
                      for (_, c_out), c in zip(padded_conv_widths(fe, multiple), fe.layers))
        if convs != fe.layers:
            changes["frontend"] = WaveformFrontend(convs, norm=fe.norm, conv_bias=fe.conv_bias,
                                                   channel_scale=fe.channel_scale)
    layers = tuple(LayerSpec(la.heads, padded_ffn(la.ffn_dim, multiple), la.head_dim) for la in spec.layers)
    if layers != spec.layers:
        changes["layers"] = layers
    return spec.replace(**changes) if changes else spec
