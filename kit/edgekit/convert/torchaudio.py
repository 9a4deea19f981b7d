"""torchaudio wav2vec2/HuBERT checkpoints and DPHuBERT's pruned ones: {'state_dict', 'config'}.

config holds the keyword arguments of (DPHuBERT's) wav2vec2_model: extractor_conv_layer_config,
extractor_mode group_norm|layer_norm, encoder_num_heads / encoder_ff_interm_features (an int,
or per-layer lists after pruning), encoder_use_attention / encoder_use_feed_forward per layer,
encoder_head_dim, encoder_layer_norm_first...

Semantics checked against DPHuBERT's wav2vec2/components.py: a post-LN EncoderLayer whose
attention or FFN was pruned away still applies layer_norm and final_layer_norm; a pre-LN one
skips the block and its norm. edgekit's EncoderLayer does the same. torchaudio's Transformer
takes layer_norm_first=not config flag, which puts encoder.transformer.layer_norm before the
layers in post-LN models, as edgekit's encoder_layer_norm.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..arch import ArchSpec, ConvLayer, LayerSpec, PosConv, WaveformFrontend
from ..errors import FormatError
from .common import Config, KeyMapper, finish, fmt_keys, has_weight_norm

WHERE = "torchaudio/DPHuBERT"
_MODES = {"group_norm": "group", "layer_norm": "layer"}
_PRUNE_FLAGS = ("extractor_prune_conv_channels", "encoder_prune_attention_heads", "encoder_prune_attention_layer",
                "encoder_prune_feed_forward_intermediate", "encoder_prune_feed_forward_layer")


def load_torchaudio(ckpt: Mapping[str, Any], name: str = "") -> tuple[torch.nn.Module, ArchSpec]:
    sd, config = ckpt.get("state_dict"), ckpt.get("config")
    if not isinstance(sd, Mapping) or not isinstance(config, Mapping):
        raise FormatError(f"{WHERE}: expected {{'state_dict': dict, 'config': dict}}, found "
                          f"state_dict={type(sd).__name__}, config={type(config).__name__}")
    spec = spec_from_config(Config(config, WHERE), sd, name or "dphubert")
    mapper = KeyMapper(sd, WHERE)
    map_keys(mapper, spec)
    mapper.drop("aux.", "CTC output layer (aux_num_out; task-specific, edgekit exports the encoder)")
    return finish(spec, mapper), spec


def _per_layer(c: Config, key: str, n: int) -> list[int]:
    value = c.get(key, (int, list, tuple))
    return [value] * n if isinstance(value, int) else c.int_list(key, n)


def spec_from_config(c: Config, sd: Mapping[str, Any], name: str) -> ArchSpec:
    if c.has("encoder_remaining_heads") or c.has("encoder_total_num_heads"):
        raise FormatError(f"{WHERE}: a WavLM config (encoder_remaining_heads); expected a wav2vec2/HuBERT model")
    flags = [f for f in _PRUNE_FLAGS if c.get(f, bool, False)]
    concrete = [k for k in sd if "hard_concrete" in k]
    if flags or concrete:
        raise FormatError(f"{WHERE}: pruning is still in progress ({', '.join(flags) or fmt_keys(concrete, 2)}); "
                          "expected the final pruned model (run DPHuBERT's prune.py first)")
    if c.get("normalize_waveform", bool, False):
        raise FormatError(f"{WHERE}: normalize_waveform=True (per-utterance waveform normalisation inside the "
                          "model) is not supported; edgekit expects the waveform as the model's input")
    mode = c.require_value("extractor_mode", tuple(_MODES))
    conv = c.get("extractor_conv_layer_config", (list, tuple))
    try:
        layers_fe = tuple(ConvLayer(*map(int, t)) for t in conv)
    except (TypeError, ValueError):
        raise FormatError(f"{WHERE}: extractor_conv_layer_config={conv!r} is not a list of "
                          "(channels, kernel, stride)") from None
    frontend = WaveformFrontend(layers_fe, norm=_MODES[mode], conv_bias=c.get("extractor_conv_bias", bool, False),
                                channel_scale=_has_channel_scale(sd))
    embed = c.get("encoder_embed_dim", int)
    n = c.get("encoder_num_layers", int)
    heads = _per_layer(c, "encoder_num_heads", n)
    ffn = _per_layer(c, "encoder_ff_interm_features", n)
    use_attn = c.bool_list("encoder_use_attention", n) if c.has("encoder_use_attention") else [True] * n
    use_ffn = c.bool_list("encoder_use_feed_forward", n) if c.has("encoder_use_feed_forward") else [True] * n
    # torchaudio derives head_dim from the unpruned width; DPHuBERT stores it (heads shrink, head_dim does not).
    head_dim = c.get("encoder_head_dim", int, None)
    if head_dim is None:
        if not heads[0] or embed % heads[0]:
            raise FormatError(f"{WHERE}: no encoder_head_dim and encoder_num_heads={heads[0]} does not divide "
                              f"encoder_embed_dim={embed}")
        head_dim = embed // heads[0]
    layers = tuple(LayerSpec(heads=h if a else 0, ffn_dim=f if u else 0, head_dim=head_dim)
                   for h, f, a, u in zip(heads, ffn, use_attn, use_ffn))
    pos = PosConv(kernel=c.get("encoder_pos_conv_kernel", int), groups=c.get("encoder_pos_conv_groups", int),
                  weight_norm=has_weight_norm(sd, "encoder.transformer.pos_conv_embed.conv."))
    try:
        return ArchSpec(frontend=frontend, embed_dim=embed, layers=layers, feature_layer_norm=True, pos_conv=pos,
                        layer_norm_first=c.get("encoder_layer_norm_first", bool), name=name)
    except ValueError as e:
        raise FormatError(f"{WHERE}: config describes an invalid architecture: {e}") from None


def map_keys(m: KeyMapper, spec: ArchSpec) -> None:
    fe = spec.frontend
    assert isinstance(fe, WaveformFrontend)
    for i in range(len(fe.layers)):
        p = f"feature_extractor.conv_layers.{i}."
        m.move_prefix(p + "conv.", p + "conv.")
        m.move_prefix(p + "layer_norm.", p + "layer_norm.")
    _dummy_weight(m)
    m.move_prefix("encoder.feature_projection.layer_norm.", "feature_layer_norm.")
    m.move_prefix("encoder.feature_projection.projection.", "projection.")
    m.weight_norm_conv("encoder.transformer.pos_conv_embed.conv.", "pos_conv.")
    m.move_prefix("encoder.transformer.layer_norm.", "encoder_layer_norm.")
    for i, layer in enumerate(spec.layers):
        src, dst = f"encoder.transformer.layers.{i}.", f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            m.move_prefix(f"{src}attention.{proj}.", f"{dst}attention.{proj}.")
        for part in ("layer_norm", "final_layer_norm", "feed_forward.intermediate_dense", "feed_forward.output_dense"):
            m.move_prefix(f"{src}{part}.", f"{dst}{part}.")


_DUMMY = "feature_extractor.dummy_weight"


def _has_channel_scale(sd: dict) -> bool:
    """DPHuBERT multiplies the extractor output by feature_extractor.dummy_weight, where pruning
    parks the last conv layer's mask values. All ones is the identity (no scale needed);
    anything else becomes the frontend's channel_scale."""
    w = sd.get(_DUMMY)
    return isinstance(w, torch.Tensor) and not bool(torch.all(w == 1))


def _dummy_weight(m: KeyMapper) -> None:
    if not m.has(_DUMMY):
        return
    if _has_channel_scale(m.source):
        m.move(_DUMMY, "feature_extractor.channel_scale")
    else:
        m.drop(_DUMMY, "all-ones channel scale of DPHuBERT's extractor output (the identity)")
