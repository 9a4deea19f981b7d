"""LightHuBERT checkpoints (mechanicalsea/lighthubert: lighthubert_base.pt, _small.pt, _stage1.pt).

Layout: {'cfg': {'model': {...LightHuBERTConfig fields...}}, 'model': state dict} where the
state dict is the full HuBERT-Base-shaped supernet in fairseq names
(feature_extractor.conv_layers.{i}.0.weight, conv_layers.0.2.* group norm or conv_layers.{i}.2.1.*
layer norms, layer_norm.*, post_extract_proj.*, mask_emb, encoder.pos_conv.0.{weight_g,weight_v,bias},
encoder.layers.{i}.self_attn.{q,k,v,out}_proj.*, .self_attn_layer_norm.*, .fc1.*, .fc2.*,
.final_layer_norm.*, encoder.layer_norm.*) plus the distillation head layer_pred_heads.{i}.weight.
Which subnet to run is chosen at load time; the weights are renamed to the supernet's names, then
`edgekit.supernet.extract` slices them with the published rules.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..arch import ConvLayer, WaveformFrontend
from ..errors import FormatError
from ..models import build_model
from ..space import SearchSpace, SubnetError, SupernetShape, get_space
from .common import Config, fmt_keys, parse_layer_list

WHERE = "LightHuBERT"
# Pretraining / distillation-only weights: not part of any inference subnet.
_TRAINING_ONLY = ("layer_pred_heads.", "final_proj.", "label_embs_concat")
_EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}


def looks_like_lighthubert(ckpt: Any) -> bool:
    """A fairseq-layout checkpoint carrying LightHuBERT's distillation heads or supernet config."""
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        return False
    keys = ckpt["model"]
    if "encoder.layers.0.self_attn.q_proj.weight" not in keys:
        return False
    cfg = ckpt.get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, Mapping) else None
    if isinstance(model_cfg, Mapping) and ("supernet_type" in model_cfg or
                                           model_cfg.get("_name") in ("student_hubert", "hubert_pruner")):
        return True
    return any(isinstance(k, str) and k.startswith("layer_pred_heads.") for k in keys)


# --------------------------------------------------------------------------- config


def shape_from_cfg(model_cfg: Mapping, state: Mapping, keep_maps=None) -> SupernetShape:
    """The supernet shape a LightHuBERT config describes (LightHuBERTConfig defaults where absent)."""
    cfg = Config(model_cfg, WHERE)
    cfg.require_value("layer_type", ("transformer",), "transformer")
    cfg.require_value("pos_conv_depth", (1,), 1, why="multi-layer positional conv is not supported")
    cfg.require_value("layer_norm_first", (False,), False, why="LightHuBERT supernets are post-LN")
    layers = parse_layer_list(cfg.get("conv_feature_layers", (str, list, tuple),
                                      "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"),
                              WHERE, "conv_feature_layers")
    if cfg.has("extractor_mode"):
        mode = cfg.require_value("extractor_mode", tuple(_EXTRACTOR_MODES))
    else:
        # Upstream's config default is layer_norm but the released Base-shaped checkpoints use
        # group norm; without a config value, the weights say which.
        mode = "default" if "feature_extractor.conv_layers.0.2.weight" in state else "layer_norm"
    frontend = WaveformFrontend(tuple(ConvLayer(*c) for c in layers), norm=_EXTRACTOR_MODES[mode],
                                conv_bias=bool(cfg.get("conv_bias", bool, False)))
    embed = cfg.get("encoder_embed_dim", int, 768)
    heads = cfg.get("encoder_attention_heads", int, 12)
    if embed % heads:
        raise FormatError(f"{WHERE}: config encoder_embed_dim={embed} is not divisible by "
                          f"encoder_attention_heads={heads}")
    n_layers = cfg.get("encoder_layers", int, 12)
    try:
        return SupernetShape(frontend=frontend, embed_dim=embed, heads=heads, head_dim=embed // heads,
                             ffn_dim=cfg.get("encoder_ffn_embed_dim", int, 3072), layers=n_layers,
                             pos_conv_kernel=cfg.get("conv_pos", int, 128),
                             pos_conv_groups=cfg.get("conv_pos_groups", int, 16),
                             keep_maps=keep_maps if n_layers != 12 else None)
    except SubnetError as e:
        raise FormatError(f"{WHERE}: config describes no usable supernet: {e}") from None


def _space_for(model_cfg: Mapping, shape: SupernetShape, space: SearchSpace | str | None) -> SearchSpace:
    if space is None:
        kind = Config(model_cfg, WHERE).require_value("supernet_type", ("base", "small"), "base")
        space = f"lighthubert-{kind}"
    base = get_space(space)
    try:
        return dataclasses.replace(base, supernet=shape)
    except SubnetError as e:
        raise FormatError(f"{WHERE}: the checkpoint's supernet does not hold space {base.name}: {e}") from None


# --------------------------------------------------------------------------- key map


def key_map(shape: SupernetShape) -> dict[str, str]:
    """fairseq key -> supernet (SpeechEncoder) key, for every weight the shape has."""
    m: dict[str, str] = {}
    fe = shape.frontend
    for i, _ in enumerate(fe.layers):
        src, dst = f"feature_extractor.conv_layers.{i}.", f"feature_extractor.conv_layers.{i}."
        m[src + "0.weight"] = dst + "conv.weight"
        if fe.conv_bias:
            m[src + "0.bias"] = dst + "conv.bias"
        norm_src = {"group": "2." if i == 0 else None, "layer": "2.1.", "none": None}[fe.norm]
        if norm_src is not None:
            for n in ("weight", "bias"):
                m[f"{src}{norm_src}{n}"] = f"{dst}layer_norm.{n}"
    for n in ("weight", "bias"):
        m[f"layer_norm.{n}"] = f"feature_layer_norm.{n}"
        m[f"post_extract_proj.{n}"] = f"projection.{n}"
        m[f"encoder.layer_norm.{n}"] = f"encoder_layer_norm.{n}"
    m["mask_emb"] = "mask_emb"
    for n in ("weight_g", "weight_v", "bias"):
        m[f"encoder.pos_conv.0.{n}"] = f"pos_conv.{n}"
    for i in range(shape.layers):
        src, dst = f"encoder.layers.{i}.", f"layers.{i}."
        for n in ("weight", "bias"):
            for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
                m[f"{src}self_attn.{p}.{n}"] = f"{dst}attention.{p}.{n}"
            m[f"{src}self_attn_layer_norm.{n}"] = f"{dst}layer_norm.{n}"
            m[f"{src}fc1.{n}"] = f"{dst}feed_forward.intermediate_dense.{n}"
            m[f"{src}fc2.{n}"] = f"{dst}feed_forward.output_dense.{n}"
            m[f"{src}final_layer_norm.{n}"] = f"{dst}final_layer_norm.{n}"
    return m


def supernet_state(state: Mapping[str, Any], shape: SupernetShape) -> dict[str, torch.Tensor]:
    """Rename a LightHuBERT state dict to supernet keys, strictly: unknown keys, missing keys
    and shape mismatches are a FormatError listing them."""
    state = dict(state)
    # torch >= 2.1 weight_norm parametrisation names, as some re-saved checkpoints carry.
    for old, new in (("original0", "weight_g"), ("original1", "weight_v")):
        k = f"encoder.pos_conv.0.parametrizations.weight.{old}"
        if k in state:
            state[f"encoder.pos_conv.0.{new}"] = state.pop(k)
    mapping = key_map(shape)
    unknown = [k for k in state if k not in mapping and not (isinstance(k, str) and k.startswith(_TRAINING_ONLY))]
    if unknown:
        raise FormatError(f"{WHERE}: {len(unknown)} checkpoint key(s) edgekit does not understand: "
                          f"{fmt_keys(map(str, unknown))}; expected only fairseq HuBERT keys plus "
                          "layer_pred_heads.* (refusing to load partially)")
    missing = [k for k in mapping if k not in state and k != "mask_emb"]
    if missing:
        raise FormatError(f"{WHERE}: {len(missing)} key(s) missing from the checkpoint: {fmt_keys(missing)} "
                          "(its config describes a model that has them; refusing to load partially)")
    from ..supernet import supernet_param_shapes
    expected = supernet_param_shapes(shape)
    out: dict[str, torch.Tensor] = {}
    bad = []
    for src, dst in mapping.items():
        if src not in state:
            continue
        t = state[src]
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"{WHERE}: {src} holds a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != expected[dst]:
            bad.append(f"{src} {tuple(t.shape)} vs {expected[dst]}")
        out[dst] = t.float() if t.is_floating_point() else t
    if bad:
        raise FormatError(f"{WHERE}: {len(bad)} shape mismatch(es) (checkpoint vs its config): {fmt_keys(bad, 3)}")
    return out


# --------------------------------------------------------------------------- load


def _read(checkpoint: Mapping | str | os.PathLike) -> Mapping:
    if isinstance(checkpoint, (str, os.PathLike)):
        from .detect import read_torch
        return read_torch(os.fspath(checkpoint))
    return checkpoint


def load_lighthubert(checkpoint: Mapping | str | os.PathLike, subnet: Any = "default",
                     space: SearchSpace | str | None = None) -> tuple[torch.nn.Module, Any]:
    """A LightHuBERT checkpoint (dict or path) -> (standalone SpeechEncoder in eval mode, ArchSpec).

    subnet: "default" | "max" | "min" | dict | Subnet | ArchSpec, from the checkpoint's space
    (cfg supernet_type base/small) unless `space` names another. A stage-1 checkpoint is the
    full model: subnet="max"."""
    ckpt = _read(checkpoint)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        found = ", ".join(sorted(map(str, ckpt))[:5]) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise FormatError(f"{WHERE}: expected a checkpoint dict with 'cfg' and 'model', found {found}")
    cfg = ckpt.get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, Mapping) else None
    if not isinstance(model_cfg, Mapping):
        raise FormatError(f"{WHERE}: checkpoint has no cfg['model'] dict; expected the LightHuBERTConfig fields "
                          "saved by the LightHuBERT training code")
    state = ckpt["model"]
    if space is None and isinstance(model_cfg.get("edgekit_space"), str):
        # Written by `edgekit train-supernet` for spaces other than base/small (tiny-supernet, a space JSON).
        space = model_cfg["edgekit_space"]
    keep_maps = get_space(space).supernet.keep_maps if space is not None else None
    shape = shape_from_cfg(model_cfg, state, keep_maps)
    full = supernet_state(state, shape)  # the weights must match their own config first
    sp = _space_for(model_cfg, shape, space)
    from ..supernet import extract  # supernet registers presets in zoo; import it only when loading
    spec, sd = extract(full, sp.resolve(subnet), space=sp)
    model = build_model(spec)
    model.load_state_dict(sd, strict=True)
    return model.eval(), spec


__all__ = ["key_map", "load_lighthubert", "looks_like_lighthubert", "shape_from_cfg", "supernet_state"]
