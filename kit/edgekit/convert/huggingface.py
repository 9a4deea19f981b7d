"""HuggingFace transformers HubertModel / Wav2Vec2Model (and ForCTC / ForPreTraining) importer.

Source: a saved directory (config.json + model.safetensors | pytorch_model.bin | shards), or a
bare state dict. A bare state dict carries no heads count, strides or LayerNorm order, so it is
only accepted with a config.json beside it, or when its shapes are exactly those of a published
Base or Large model (then the published config is used and named in the spec).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..arch import ArchSpec, ConvLayer, LayerSpec, PosConv, WaveformFrontend
from ..errors import FormatError
from .common import Config, KeyMapper, StateDict, finish, has_weight_norm

WHERE = "HuggingFace"
_MODEL_TYPES = ("hubert", "wav2vec2")
_PREFIXES = ("hubert.", "wav2vec2.")
# Task / pretraining heads outside the encoder, dropped by name.
_DROPPED = {
    "lm_head.": "ForCTC vocabulary head (task-specific; edgekit exports the encoder)",
    "quantizer.": "ForPreTraining codebook quantizer (pretraining only)",
    "project_q.": "ForPreTraining quantized-target projection (pretraining only)",
    "project_hid.": "ForPreTraining context projection (pretraining only)",
}
# edgekit's LayerNorms use torch's default eps; a model trained with another would drift.
_LN_EPS = 1e-5


def load_huggingface(state_dict: Mapping[str, Any], config: dict | None = None, name: str = "") -> tuple[torch.nn.Module, ArchSpec]:
    sd, prefix = _strip_task_prefix(state_dict)
    if config is None:
        config = _published_config_for(sd)
    spec = spec_from_config(config, sd, name)
    mapper = KeyMapper(sd, WHERE)
    map_keys(mapper, spec)
    for key, reason in _DROPPED.items():
        mapper.drop(key, reason)
    return finish(spec, mapper), spec


def _strip_task_prefix(state_dict: Mapping[str, Any]) -> tuple[StateDict, str]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "feature_extractor.") for k in state_dict):
            # Keys outside the prefix are the task heads (lm_head...); keep them unprefixed so
            # they are either dropped by name or reported as unknown.
            return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}, prefix
    return dict(state_dict), ""


# --------------------------------------------------------------------------- config -> spec


def spec_from_config(config: dict, sd: Mapping[str, Any], name: str = "") -> ArchSpec:
    if not isinstance(config, dict):
        raise FormatError(f"{WHERE}: config.json is a {type(config).__name__}; expected a JSON object")
    c = Config(config, WHERE)
    model_type = c.require_value("model_type", _MODEL_TYPES, why="other model types are not HuBERT-family "
                                 "encoders edgekit builds")
    for key in ("hidden_act", "feat_extract_activation"):
        c.require_value(key, ("gelu",), default="gelu", why="edgekit's layers use exact GELU")
    eps = c.get("layer_norm_eps", float, _LN_EPS)
    if abs(eps - _LN_EPS) > 1e-12:
        raise FormatError(f"{WHERE}: config layer_norm_eps={eps} is not supported; edgekit's LayerNorms use 1e-05")
    if c.get("conv_pos_batch_norm", bool, False):
        raise FormatError(f"{WHERE}: config conv_pos_batch_norm=True is not supported; edgekit's positional conv "
                          "uses weight norm (the HuBERT/wav2vec2 layout)")
    if c.get("add_adapter", bool, False) or c.get("adapter_attn_dim", int, None):
        raise FormatError(f"{WHERE}: adapters (add_adapter / adapter_attn_dim) are not supported; expected a plain "
                          "encoder")
    norm = c.require_value("feat_extract_norm", ("group", "layer"), default="group")
    dims = c.int_list("conv_dim")
    kernels = c.int_list("conv_kernel", len(dims))
    strides = c.int_list("conv_stride", len(dims))
    frontend = WaveformFrontend(tuple(ConvLayer(d, k, s) for d, k, s in zip(dims, kernels, strides)), norm=norm,
                                conv_bias=c.get("conv_bias", bool, False))
    hidden = c.get("hidden_size", int)
    heads = c.get("num_attention_heads", int)
    if hidden % heads:
        raise FormatError(f"{WHERE}: hidden_size={hidden} is not divisible by num_attention_heads={heads}")
    layers = tuple(LayerSpec(heads=heads, ffn_dim=c.get("intermediate_size", int), head_dim=hidden // heads)
                   for _ in range(c.get("num_hidden_layers", int)))
    # Wav2Vec2FeatureProjection always normalises; HubertFeatureProjection only with feat_proj_layer_norm.
    feature_ln = c.get("feat_proj_layer_norm", bool, True) if model_type == "hubert" else True
    pos = PosConv(kernel=c.get("num_conv_pos_embeddings", int), groups=c.get("num_conv_pos_embedding_groups", int),
                  weight_norm=has_weight_norm(sd, "encoder.pos_conv_embed.conv."))
    try:
        return ArchSpec(frontend=frontend, embed_dim=hidden, layers=layers, feature_layer_norm=feature_ln,
                        pos_conv=pos, layer_norm_first=c.get("do_stable_layer_norm", bool, False),
                        mask_emb="masked_spec_embed" in sd, name=name or config.get("_name_or_path") or model_type)
    except ValueError as e:
        raise FormatError(f"{WHERE}: config describes an invalid architecture: {e}") from None


_BASE = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
         "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "hidden_act": "gelu"}
# The published shapes a bare state dict may match: (hidden, layers, ffn, extractor norm) -> config.
_PUBLISHED = {
    (768, 12, 3072, "group"): dict(_BASE, hidden_size=768, num_hidden_layers=12, intermediate_size=3072,
                                   num_attention_heads=12, feat_extract_norm="group", do_stable_layer_norm=False,
                                   conv_bias=False),
    (1024, 24, 4096, "layer"): dict(_BASE, hidden_size=1024, num_hidden_layers=24, intermediate_size=4096,
                                    num_attention_heads=16, feat_extract_norm="layer", do_stable_layer_norm=True,
                                    conv_bias=True),
}


def _published_config_for(sd: Mapping[str, Any]) -> dict:
    """A bare state dict: use the published config whose every shape it matches, else refuse."""
    try:
        hidden = sd["feature_projection.projection.weight"].shape[0]
        n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
        ffn = sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
    except (KeyError, ValueError):
        raise FormatError(f"{WHERE}: a bare state dict without config.json and without the encoder keys; expected a "
                          "saved model directory") from None
    norm = "layer" if "feature_extractor.conv_layers.1.layer_norm.weight" in sd else "group"
    cfg = _PUBLISHED.get((hidden, n_layers, ffn, norm))
    if cfg is None:
        raise FormatError(f"{WHERE}: a bare state dict ({n_layers} layers x {hidden}, ffn {ffn}, {norm} norm) without "
                          "config.json: heads, strides and LayerNorm order are not in the weights; put the model's "
                          "config.json next to the file")
    # The feature LayerNorm is visible in the keys; HubertConfig's flag expresses either case.
    return dict(cfg, model_type="hubert", feat_proj_layer_norm="feature_projection.layer_norm.weight" in sd,
                _name_or_path=f"bare state dict ({n_layers}x{hidden}, published config assumed)")


# --------------------------------------------------------------------------- keys


def map_keys(m: KeyMapper, spec: ArchSpec) -> None:
    fe = spec.frontend
    assert isinstance(fe, WaveformFrontend)
    for i in range(len(fe.layers)):
        m.move_prefix(f"feature_extractor.conv_layers.{i}.conv.", f"feature_extractor.conv_layers.{i}.conv.")
        m.move_prefix(f"feature_extractor.conv_layers.{i}.layer_norm.",
                      f"feature_extractor.conv_layers.{i}.layer_norm.")
    m.move_prefix("feature_projection.layer_norm.", "feature_layer_norm.")
    m.move_prefix("feature_projection.projection.", "projection.")
    m.move("masked_spec_embed", "mask_emb")
    m.weight_norm_conv("encoder.pos_conv_embed.conv.", "pos_conv.")
    m.move_prefix("encoder.layer_norm.", "encoder_layer_norm.")
    for i in range(spec.num_layers):
        src, dst = f"encoder.layers.{i}.", f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            m.move_prefix(f"{src}attention.{proj}.", f"{dst}attention.{proj}.")
        for part in ("layer_norm", "final_layer_norm", "feed_forward.intermediate_dense", "feed_forward.output_dense"):
            m.move_prefix(f"{src}{part}.", f"{dst}{part}.")
