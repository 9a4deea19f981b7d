"""FitHuBERT PyTorch Lightning checkpoints: {'state_dict': {'student_model.*', 'teacher_model.*'}, ...}.

Layout from glory20h/FitHuBERT (fithubert/model.py, module.py): the fairseq conv extractor with a
feature LayerNorm, post_extract_proj, and a TransformerEncoder into whose `layers` list the time
reduction layer is inserted at tr_layer_index, so encoder.layers.{tr_layer_index} is the
Conv1d(E, E, kernel=stride=tr_reduce_factor) and later transformer layers sit one index higher.
`upsampler` is a ConvTranspose1d back to 50 Hz. Heads: with layerwise_proj, proj_head.{i}
(one per layer: upsampler + lin_proj, lin_proj absent when the widths match), or final_proj after
_disable_projection_heads(); otherwise a DistilHuBERT-style proj_head with SplitLinear.

The model config is not inside the state dict: it is read from the Lightning hyper_parameters
(the training yaml's `distiller` section), or passed as `config`.
"""
from __future__ import annotations

import ast
import re
from typing import Any, Mapping

import torch

from ..arch import ArchSpec, DistillHeads, LayerwiseHeads, TimeReduction
from ..errors import FormatError
from .common import Config, KeyMapper, finish, identity_linear, strip_prefix
from .fairseq import map_frontend_keys, map_layer_keys, map_projection, spec_from_config as fairseq_spec
from .s3prl import map_split_heads

WHERE = "FitHuBERT"
PREFIX = "student_model."


def find_config(ckpt: Mapping[str, Any]) -> dict | None:
    """The `distiller` section wherever Lightning put the training config."""
    hp = ckpt.get("hyper_parameters")
    stack = [hp]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("distiller"), Mapping):
                return dict(item["distiller"])
            stack.extend(v for v in item.values() if isinstance(v, Mapping))
    return None


def load_fithubert(ckpt: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                   name: str = "") -> tuple[torch.nn.Module, ArchSpec]:
    full = ckpt.get("state_dict")
    if not isinstance(full, Mapping):
        raise FormatError(f"{WHERE}: 'state_dict' is a {type(full).__name__}; expected the Lightning state dict")
    config = dict(config) if config is not None else find_config(ckpt)
    if config is None:
        raise FormatError(f"{WHERE}: the checkpoint carries no model config (no hyper_parameters with a 'distiller' "
                          "section); call edgekit.convert.fithubert.load_fithubert(ckpt, config=<yaml's distiller "
                          "section>)")
    sd = strip_prefix(full, PREFIX)
    others = sorted(k for k in full if not k.startswith(PREFIX) and not k.startswith("teacher_model."))
    c = Config(config, WHERE)
    if c.get("n_mels", int, 0) > 0:
        raise FormatError(f"{WHERE}: n_mels={c.get('n_mels', int)} (torchaudio MelSpectrogram frontend) is not "
                          "supported; expected the conv extractor (n_mels: 0)")
    spec = fairseq_spec(c, sd, name or "fithubert")
    n = spec.num_layers
    tr_index = None
    if c.get("enable_tr_layer", bool, True):
        c.require_value("tr_layer_type", ("conv1d",), default="fc1",
                        why="fc1/fc2 concatenate frames with their own zero-padding rule edgekit does not model")
        factor = c.get("tr_reduce_factor", int, 2)
        tr_index = c.get("tr_layer_index", int, 1)
        if not 0 <= tr_index < n:
            raise FormatError(f"{WHERE}: tr_layer_index={tr_index}; expected 0..{n - 1}")
        # module.py builds the conv with kernel_size=tr_reduce_factor (tr_conv1d_kernel is not used).
        spec = spec.replace(time_reduction=TimeReduction(before_layer=tr_index, factor=factor, kernel=factor,
                                                         upsample=True))
    heads, layer_ids = _heads(c, sd, n)
    spec = spec.replace(heads=heads)
    m = KeyMapper(sd, WHERE)
    map_frontend_keys(m, spec)
    m.move_prefix("layer_norm.", "feature_layer_norm.")
    map_projection(m, spec)
    m.weight_norm_conv("encoder.pos_conv.0.", "pos_conv.")
    m.move_prefix("encoder.layer_norm.", "encoder_layer_norm.")
    for i in range(n):
        j = i if tr_index is None or i < tr_index else i + 1
        map_layer_keys(m, f"encoder.layers.{j}.", f"layers.{i}.")
    if tr_index is not None:
        m.move_prefix(f"encoder.layers.{tr_index}.", "time_reduction.conv.")
        m.move_prefix("upsampler.", "upsampler.conv.")
    if isinstance(heads, LayerwiseHeads):
        for k, src in enumerate(layer_ids):
            _layer_head(m, src, f"heads.heads.{k}.", spec)
    elif isinstance(heads, DistillHeads):
        map_split_heads(m, "proj_head.", len(heads.targets))
    m.drop("cnn_proj_head.", "training-only head distilling the CNN features (cnn_loss)")
    model = finish(spec, m)
    if others:
        raise FormatError(f"{WHERE}: {len(others)} Lightning state key(s) outside student_model./teacher_model.: "
                          f"{', '.join(others[:5])}; expected only the student and the frozen teacher")
    return model, spec


def _heads(c: Config, sd: Mapping[str, Any], n: int):
    """-> (heads spec, the source prefixes of the layer-wise heads in order)."""
    if any(k.startswith("final_proj.") for k in sd):
        return LayerwiseHeads(layers=(n,), target_dim=_head_dim(c, sd, "final_proj.")), ["final_proj."]
    ids = sorted({int(mt.group(1)) for k in sd if (mt := re.match(r"proj_head\.(\d+)\.(upsampler|lin_proj)\.", k))})
    if ids:
        if ids != list(range(n)):
            raise FormatError(f"{WHERE}: layer-wise heads proj_head.{{{','.join(map(str, ids))}}}; expected one per "
                              f"layer (0..{n - 1})")
        return (LayerwiseHeads(layers=tuple(range(1, n + 1)), target_dim=_head_dim(c, sd, "proj_head.0.")),
                [f"proj_head.{i}." for i in ids])
    if any(k.startswith("proj_head.") for k in sd):
        # DistilHuBERT-style heads: pred_layer_id are 0-based teacher layer indices; edgekit's are 1-based.
        ids = parse_layer_ids(c.get("pred_layer_id", (str, list), "[3, 7, 11]"))
        inter = c.get("pred_head_inter_dim", int, 0)
        return DistillHeads(tuple(i + 1 for i in ids), c.get("pred_head_final_dim", int, 768),
                            inter if inter > 0 else 0), []
    return None, []


def parse_layer_ids(value: Any) -> list[int]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise FormatError(f"{WHERE}: pred_layer_id={value!r} is not a list of integers") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise FormatError(f"{WHERE}: pred_layer_id={value!r} is not a list of integers")
    return list(value)


def _head_dim(c: Config, sd: Mapping[str, Any], prefix: str) -> int:
    w = sd.get(prefix + "lin_proj.weight")
    return int(w.shape[0]) if isinstance(w, torch.Tensor) else c.get("encoder_embed_dim", int)


def _layer_head(m: KeyMapper, src: str, dst: str, spec: ArchSpec) -> None:
    m.move_prefix(src + "upsampler.", dst + "upsampler.")
    if m.has_prefix(src + "lin_proj."):
        m.move_prefix(src + "lin_proj.", dst + "lin_proj.")
    else:
        # LayerWiseProjHead has no lin_proj when the widths match: it is the identity.
        w, b = identity_linear(spec.embed_dim)
        m.put(dst + "lin_proj.weight", w)
        m.put(dst + "lin_proj.bias", b)
