"""fairseq HuBERT (and wav2vec 2.0 pretraining) checkpoints: {'cfg': {'model': ...}, 'model': state_dict}.

Old checkpoints keep the model config in 'args' (an argparse.Namespace with the same field
names); that is accepted as long as it is such a flat namespace or dict.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping

import torch

from ..arch import ArchSpec, ConvLayer, LayerSpec, PosConv, WaveformFrontend
from ..errors import FormatError
from .common import Config, KeyMapper, finish, has_weight_norm, identity_linear, parse_layer_list

WHERE = "fairseq"
_EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}
_DEFAULT_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
_DROPPED = {
    "final_proj.": "pretraining head projecting to the label-embedding space (not part of the encoder)",
    "label_embs_concat": "pretraining k-means label embeddings (not part of the encoder)",
    "quantizer.": "wav2vec 2.0 pretraining quantizer (not part of the encoder)",
    "project_q.": "wav2vec 2.0 pretraining target projection (not part of the encoder)",
}


def model_config(ckpt: Mapping[str, Any]) -> dict:
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        return dict(cfg["model"])
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    raise FormatError(f"{WHERE}: no usable config: expected cfg['model'] (a dict) or a simple 'args' namespace, "
                      f"found cfg={type(cfg).__name__}, args={type(args).__name__}")


def load_fairseq(ckpt: Mapping[str, Any], name: str = "") -> tuple[torch.nn.Module, ArchSpec]:
    cfg = model_config(ckpt)
    sd = ckpt.get("model")
    if not isinstance(sd, Mapping):
        raise FormatError(f"{WHERE}: 'model' is a {type(sd).__name__}; expected the state dict")
    c = Config(cfg, WHERE)
    kind = c.get("_name", str, c.get("arch", str, "hubert"))
    if kind not in ("hubert", "wav2vec2"):
        raise FormatError(f"{WHERE}: model {kind!r} is not supported; expected a pretrained 'hubert' or 'wav2vec2' "
                          "model (fine-tuned *_ctc checkpoints wrap the encoder in w2v_encoder: export it first)")
    spec = spec_from_config(c, sd, name or kind)
    mapper = KeyMapper(sd, WHERE)
    map_encoder_keys(mapper, spec, c)
    for key, reason in _DROPPED.items():
        mapper.drop(key, reason)
    return finish(spec, mapper), spec


def spec_from_config(c: Config, sd: Mapping[str, Any], name: str, feature_layer_norm: bool = True) -> ArchSpec:
    """The fairseq TransformerEncoder family (also used by s3prl's distiller and FitHuBERT)."""
    mode = c.require_value("extractor_mode", tuple(_EXTRACTOR_MODES), default="default")
    conv_key = "conv_feature_layers" if c.has("conv_feature_layers") or not c.has(
        "extractor_conv_feature_layers") else "extractor_conv_feature_layers"
    conv = parse_layer_list(c.get(conv_key, (str, list), _DEFAULT_CONV), c.where, conv_key)
    frontend = WaveformFrontend(tuple(ConvLayer(*t) for t in conv), norm=_EXTRACTOR_MODES[mode],
                                conv_bias=c.get("conv_bias", bool, False))
    c.require_value("activation_fn", ("gelu",), default="gelu", why="edgekit's layers use exact GELU")
    c.require_value("layer_type", ("transformer",), default="transformer", why="conformer layers are not HuBERT")
    c.require_value("pos_conv_depth", (1,), default=1, why="edgekit has one weight-normed positional conv")
    embed = c.get("encoder_embed_dim", int, 768)
    heads = c.get("encoder_attention_heads", int, 12)
    if embed % heads:
        raise FormatError(f"{c.where}: encoder_embed_dim={embed} is not divisible by encoder_attention_heads={heads}")
    layers = tuple(LayerSpec(heads=heads, ffn_dim=c.get("encoder_ffn_embed_dim", int, 3072), head_dim=embed // heads)
                   for _ in range(c.get("encoder_layers", int, 12)))
    pos = PosConv(kernel=c.get("conv_pos", int, 128), groups=c.get("conv_pos_groups", int, 16),
                  weight_norm=has_weight_norm(sd, "encoder.pos_conv.0."))
    try:
        return ArchSpec(frontend=frontend, embed_dim=embed, layers=layers, feature_layer_norm=feature_layer_norm,
                        pos_conv=pos, layer_norm_first=c.get("layer_norm_first", bool, False),
                        mask_emb="mask_emb" in sd, name=name)
    except ValueError as e:
        raise FormatError(f"{c.where}: config describes an invalid architecture: {e}") from None


def map_frontend_keys(m: KeyMapper, spec: ArchSpec) -> None:
    """fairseq ConvFeatureExtractionModel: conv_layers.{i} is Sequential(conv, dropout, norm, gelu);
    group mode has GroupNorm at .2 of the first block, layer mode Sequential(T, LayerNorm, T) at .2."""
    fe = spec.frontend
    assert isinstance(fe, WaveformFrontend)
    for i in range(len(fe.layers)):
        src, dst = f"feature_extractor.conv_layers.{i}.", f"feature_extractor.conv_layers.{i}."
        m.move_prefix(src + "0.", dst + "conv.")
        if fe.norm == "group" and i == 0:
            m.move_prefix(src + "2.", dst + "layer_norm.")
        elif fe.norm == "layer":
            m.move_prefix(src + "2.1.", dst + "layer_norm.")


def map_projection(m: KeyMapper, spec: ArchSpec) -> None:
    # fairseq builds post_extract_proj only when the widths differ; edgekit always has one, so an
    # absent projection between equal widths is the identity it stands for.
    if not m.has_prefix("post_extract_proj.") and spec.frontend.out_dim == spec.embed_dim:
        w, b = identity_linear(spec.embed_dim)
        m.put("projection.weight", w)
        m.put("projection.bias", b)
    m.move_prefix("post_extract_proj.", "projection.")


def map_layer_keys(m: KeyMapper, src: str, dst: str) -> None:
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        m.move_prefix(f"{src}self_attn.{proj}.", f"{dst}attention.{proj}.")
    m.move_prefix(f"{src}self_attn_layer_norm.", f"{dst}layer_norm.")
    m.move_prefix(f"{src}fc1.", f"{dst}feed_forward.intermediate_dense.")
    m.move_prefix(f"{src}fc2.", f"{dst}feed_forward.output_dense.")
    m.move_prefix(f"{src}final_layer_norm.", f"{dst}final_layer_norm.")


def map_encoder_keys(m: KeyMapper, spec: ArchSpec, c: Config | None = None) -> None:
    map_frontend_keys(m, spec)
    m.move_prefix("layer_norm.", "feature_layer_norm.")
    map_projection(m, spec)
    m.move("mask_emb", "mask_emb")
    m.weight_norm_conv("encoder.pos_conv.0.", "pos_conv.")
    m.move_prefix("encoder.layer_norm.", "encoder_layer_norm.")
    for i in range(spec.num_layers):
        map_layer_keys(m, f"encoder.layers.{i}.", f"layers.{i}.")
