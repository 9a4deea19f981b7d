"""s3prl DistilHuBERT (distiller) checkpoints: {'Distiller': state_dict, 'Config': {'distiller': {...}}, ...}.

Layout from s3prl/upstream/distiller: the fairseq conv extractor without a feature LayerNorm,
post_extract_proj, a fairseq TransformerEncoder, and with out_layer_type 'expand-last' the
prediction heads output_layer = Sequential(Linear(E, inter * N), GELU, SplitLinear(inter, N, D)).
SplitLinear keeps weight [N, inter, D] and bias [1, 1, N, D]; edgekit keeps N Linear(inter, D),
so weight[n] is transposed into heads.targets.{n}.weight. Other top-level entries (Optimizer,
Step, Args...) are training state, not weights, and are not read.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..arch import ArchSpec, DistillHeads
from ..errors import FormatError
from .common import Config, KeyMapper, finish
from .fairseq import map_frontend_keys, map_layer_keys, map_projection, spec_from_config as fairseq_spec

WHERE = "s3prl DistilHuBERT"


def load_s3prl(ckpt: Mapping[str, Any], name: str = "") -> tuple[torch.nn.Module, ArchSpec]:
    sd, config = ckpt.get("Distiller"), ckpt.get("Config")
    if not isinstance(sd, Mapping):
        raise FormatError(f"{WHERE}: 'Distiller' is a {type(sd).__name__}; expected the model state dict")
    if not isinstance(config, Mapping) or not isinstance(config.get("distiller"), Mapping):
        raise FormatError(f"{WHERE}: expected Config['distiller'] (the model config), found "
                          f"{type(config).__name__} without it")
    c = Config(config["distiller"], WHERE)
    c.require_value("attention_type", ("original",), default="original",
                    why="sparse/dynamic attention is not HuBERT attention")
    task = c.require_value("task_emb_type", ("expand-last", "none"), default="expand-last",
                           why="task embeddings change the encoder input")
    out_type = c.require_value("out_layer_type", ("expand-last", "none"), default="expand-last")
    spec = fairseq_spec(c, sd, name or "distilhubert", feature_layer_norm=False)
    if out_type == "expand-last":
        if task != "expand-last":
            raise FormatError(f"{WHERE}: out_layer_type 'expand-last' needs task_emb_type 'expand-last', found {task!r}")
        targets = c.int_list("pred_layer_id")
        final_dim = c.get("final_dim", int, 768)
        inter = c.get("out_layer_inter_dim", int, -1)
        if len(targets) != c.get("n_tasks", int, len(targets)):
            raise FormatError(f"{WHERE}: n_tasks={c.get('n_tasks', int)} but pred_layer_id has {len(targets)} entries")
        spec = spec.replace(heads=DistillHeads(tuple(targets), final_dim, inter if inter > 0 else 0))
    m = KeyMapper(sd, WHERE)
    map_frontend_keys(m, spec)
    map_projection(m, spec)
    m.weight_norm_conv("encoder.pos_conv.0.", "pos_conv.")
    m.move_prefix("encoder.layer_norm.", "encoder_layer_norm.")
    for i in range(spec.num_layers):
        map_layer_keys(m, f"encoder.layers.{i}.", f"layers.{i}.")
    if isinstance(spec.heads, DistillHeads):
        map_split_heads(m, "output_layer.", len(spec.heads.targets))
    return finish(spec, m), spec


def map_split_heads(m: KeyMapper, prefix: str, n: int) -> None:
    """Sequential(Linear, GELU, SplitLinear) at `prefix` -> edgekit DistilHubertHeads."""
    m.move_prefix(prefix + "0.", "heads.proj.")
    if n == 1:  # SplitLinear with one split wraps a plain nn.Linear at .layer
        m.move_prefix(prefix + "2.layer.", "heads.targets.0.")
        return
    w_key, b_key = prefix + "2.weight", prefix + "2.bias"
    if not (m.has(w_key) and m.has(b_key)):
        return  # reported as missing heads.targets.* by finish()
    w, b = m.source[w_key], m.source[b_key]
    if w.dim() != 3 or w.shape[0] != n or b.numel() != n * w.shape[2]:
        raise FormatError(f"{m.where}: SplitLinear {w_key} {tuple(w.shape)} / {b_key} {tuple(b.shape)} do not hold "
                          f"{n} heads; expected [N, inter, out] and [1, 1, N, out]")
    m.used.update((w_key, b_key))
    b = b.reshape(n, w.shape[2])
    for i in range(n):
        m.put(f"heads.targets.{i}.weight", w[i].t().contiguous())
        m.put(f"heads.targets.{i}.bias", b[i].clone())
