"""The LightHuBERT once-for-all supernet: one weight container, many subnets.

Public API (the search, supernet training and the importers call these):

    from edgekit.space import SearchSpace, Subnet, SupernetShape, get_space
    space = get_space("lighthubert-small")          # or "lighthubert-base", "tiny-supernet", a .json
    sub = space.sample(rng)                          # rng: random.Random | numpy Generator | int | None
    sub = space.mutate(sub, rng, prob=0.1)
    sub = space.crossover(a, b, rng)
    space.largest(), space.smallest(), space.default, space.cardinality()
    space.resolve("default" | "max" | "min" | dict | Subnet | ArchSpec) -> Subnet (validated)
    space.to_arch(sub) -> ArchSpec                    # the standalone model's description
    space.keep_map(depth) -> kept supernet layer indices (0-based)

    net = LightHubertSupernet(space)                  # a SearchSpace, a space name or a SupernetShape
    net.set_subnet(sub)                               # any SubnetLike; validated against the space
    out = net(wave, lengths=None)                     # EncoderOutput: last_hidden_state [B, T, E],
                                                      # hidden_states (input to layer 1, then each
                                                      # run layer's output), predictions
    net.active_subnet, net.active_arch()              # what runs now, as a Subnet / ArchSpec
    spec, state_dict = extract(net_or_state_dict, sub, space=None)
    build_model(spec).load_state_dict(state_dict)     # reproduces net's forward for `sub`

    subnet_spec_for_preset("lighthubert-small", "default" | "max" | "min" | dict | Subnet) -> ArchSpec

Parameter names of the supernet are exactly those of edgekit's SpeechEncoder for
`space.supernet.full_arch()` (HuBERT Base shaped: weight-normalised positional conv, mask
embedding), so a full-size HuBERT Base / LightHuBERT state dict loads 1:1 with
`net.load_state_dict(...)`. The optional prediction head (`pred_head_dim`) adds `pred_head.weight`
(LightHuBERT's `layer_pred_heads.11`, Linear(E, teacher dim) without bias, sliced to [:, :E]).

Slicing rules (LightHuBERT, models.md), applied identically by the elastic forward and by
`extract`: q/k/v weight [:A, :E], bias [:A]; out_proj [:E, :A]; every LayerNorm [:E];
projection [:E, :C]; FFN in chunks of the supernet width (chunk i of fc1 keeps its first
min(E, F - i*E) rows, fc2 the same input columns); positional conv: fold the weight norm of
the FULL weight first, then W[:E, :E/groups, :] with the same number of groups; a subnet of
depth d runs the supernet layers of keep_map(d).

Presets registered here: lighthubert-base, lighthubert-small (their default subnets),
lighthubert-stage1 (the full 95M model) and tiny-supernet (the tiny space's largest subnet).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import zoo
from .arch import ArchSpec
from .errors import FormatError, UserError
from .models import EncoderOutput, build_model
from .space import SearchSpace, Subnet, SubnetError, SupernetShape, get_space

__all__ = ["LightHubertSupernet", "extract", "ffn_index", "subnet_spec_for_preset", "supernet_space_for_preset",
           "SUPERNET_PRESETS", "supernet_param_shapes"]


def ffn_index(shape: SupernetShape, embed_dim: int, ffn_dim: int) -> list[int]:
    """Rows of fc1 (= columns of fc2) a subnet uses: chunk i (of the supernet's embed-dim-sized
    chunks) contributes its first min(E, F - i*E) rows. E=640, F=2560 -> 4 x 640 rows; E=768,
    ratio 3.5 -> 768 + 768 + 768 + 384."""
    chunk = shape.embed_dim
    rows: list[int] = []
    for i in range(math.ceil(ffn_dim / embed_dim)):
        rows.extend(range(i * chunk, i * chunk + min(embed_dim, ffn_dim - i * embed_dim)))
    return rows


@dataclass(frozen=True)
class _LayerPlan:
    index: int  # supernet layer
    heads: int
    attention_dim: int
    ffn_dim: int


class LightHubertSupernet(nn.Module):
    """HuBERT-Base-shaped weight container with an elastic forward over the active subnet."""

    def __init__(self, space: SearchSpace | SupernetShape | str = "lighthubert-base",
                 pred_head_dim: int | None = None):
        super().__init__()
        if isinstance(space, SupernetShape):
            self.space, self.shape = None, space
        else:
            self.space = get_space(space)
            self.shape = self.space.supernet
        # Borrow the modules of the full-size SpeechEncoder so parameter names and initialisation
        # are exactly edgekit's: one source of truth for what each weight is called.
        full = build_model(self.shape.full_arch())
        self.feature_extractor = full.feature_extractor
        self.feature_layer_norm = full.feature_layer_norm
        self.projection = full.projection
        self.mask_emb = full.mask_emb
        self.pos_conv = full.pos_conv
        self.encoder_layer_norm = full.encoder_layer_norm
        self.layers = full.layers
        self.pred_head = nn.Linear(self.shape.embed_dim, pred_head_dim, bias=False) if pred_head_dim else None
        self._index_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}
        self.set_subnet("max" if self.space is not None else self._full_subnet())

    # ------------------------------------------------------------------ subnet
    def _full_subnet(self) -> Subnet:
        s = self.shape
        return Subnet(s.embed_dim, s.layers, (s.heads,) * s.layers, (s.ffn_dim,) * s.layers)

    def resolve(self, subnet) -> Subnet:
        """SubnetLike -> Subnet, validated against the space (or, without one, the shape)."""
        if self.space is not None:
            sub = self.space.resolve(subnet)
        elif isinstance(subnet, Subnet):
            sub = subnet
        elif isinstance(subnet, Mapping):
            sub = Subnet.from_dict(subnet)
        elif subnet in (None, "max", "default"):
            sub = self._full_subnet()
        else:
            raise SubnetError(f"subnet {subnet!r} needs a search space; this supernet was built from a "
                              "SupernetShape, give a Subnet or a dict")
        return self.shape.check_fits(sub)

    def set_subnet(self, subnet) -> Subnet:
        """Make `subnet` the one forward runs (cheap: no weights are copied)."""
        sub = self.resolve(subnet)
        keep = self.shape.keep_map(sub.depth)
        hd = self.shape.head_dim
        self._plan = tuple(_LayerPlan(idx, h, h * hd, f) for idx, h, f in zip(keep, sub.heads, sub.ffn_dims))
        self._active = sub
        return sub

    @property
    def active_subnet(self) -> Subnet:
        return self._active

    def active_arch(self, name: str = "") -> ArchSpec:
        return self.shape.subnet_arch(self._active, name)

    def sample_subnet(self, rng=None) -> Subnet:
        """Sample from the space and activate it (supernet training's per-step call)."""
        if self.space is None:
            raise SubnetError("this supernet has no search space to sample from; build it from a SearchSpace")
        return self.set_subnet(self.space.sample(rng))

    def _ffn_rows(self, embed: int, ffn: int, device: torch.device) -> torch.Tensor:
        key = (embed, ffn, device)
        idx = self._index_cache.get(key)
        if idx is None:
            idx = torch.tensor(ffn_index(self.shape, embed, ffn), dtype=torch.long, device=device)
            self._index_cache[key] = idx
        return idx

    # ------------------------------------------------------------------ forward
    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        n = lengths
        for layer in self.shape.frontend.layers:
            n = torch.div(n - layer.kernel, layer.stride, rounding_mode="floor") + 1
        return n.clamp(min=0)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None,
                with_predictions: bool = False) -> EncoderOutput:
        """wave [B, samples] -> EncoderOutput for the active subnet (weights sliced on the fly)."""
        e = self._active.embed_dim
        feats = self.feature_layer_norm(self.feature_extractor(wave))
        x = F.linear(feats, self.projection.weight[:e], self.projection.bias[:e])
        frames = x.shape[1]
        bias = None
        if lengths is not None:
            valid = torch.arange(frames, device=x.device)[None, :] < self.frame_lengths(lengths)[:, None]
            x = x * valid[..., None].to(x.dtype)
            bias = (~valid)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min
        x = x + self._pos_conv(x, e)
        x = _layer_norm(x, self.encoder_layer_norm, e)
        hidden = [x]
        for plan in self._plan:
            x = self._layer(x, self.layers[plan.index], plan, e, bias)
            hidden.append(x)
        predictions = None
        if with_predictions and self.pred_head is not None:
            predictions = (F.linear(x, self.pred_head.weight[:, :e]),)
        return EncoderOutput(x, tuple(hidden), predictions)

    def _pos_conv(self, x: torch.Tensor, e: int) -> torch.Tensor:
        pc = self.pos_conv
        # Weight norm of the full weight first, then slice (LightHuBERT's order; slicing v and
        # renormalising would give a different weight).
        w = pc.effective_weight()[:e, : e // pc.groups, :]
        y = F.conv1d(x.transpose(1, 2), w, pc.bias[:e], padding=pc.kernel // 2, groups=pc.groups)
        if pc.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)

    def _layer(self, x: torch.Tensor, layer: nn.Module, plan: _LayerPlan, e: int,
               mask_bias: torch.Tensor | None) -> torch.Tensor:
        # Post-LN, the same op order as models.encoder.EncoderLayer so results match the
        # extracted model to float rounding.
        att = layer.attention
        b, t, _ = x.shape
        h, d, a = plan.heads, self.shape.head_dim, plan.attention_dim
        q = (F.linear(x, att.q_proj.weight[:a, :e], att.q_proj.bias[:a]) * att.scale).view(b, t, h, d).transpose(1, 2)
        k = F.linear(x, att.k_proj.weight[:a, :e], att.k_proj.bias[:a]).view(b, t, h, d).transpose(1, 2)
        v = F.linear(x, att.v_proj.weight[:a, :e], att.v_proj.bias[:a]).view(b, t, h, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask_bias is not None:
            scores = scores + mask_bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, a)
        x = x + F.linear(ctx, att.out_proj.weight[:e, :a], att.out_proj.bias[:e])
        x = _layer_norm(x, layer.layer_norm, e)
        ff = layer.feed_forward
        rows = self._ffn_rows(e, plan.ffn_dim, x.device)
        w1 = ff.intermediate_dense.weight.index_select(0, rows)[:, :e]
        b1 = ff.intermediate_dense.bias.index_select(0, rows)
        w2 = ff.output_dense.weight[:e].index_select(1, rows)
        x = x + F.linear(F.gelu(F.linear(x, w1, b1)), w2, ff.output_dense.bias[:e])
        return _layer_norm(x, layer.final_layer_norm, e)


def _layer_norm(x: torch.Tensor, ln: nn.LayerNorm, e: int) -> torch.Tensor:
    return F.layer_norm(x, (e,), ln.weight[:e], ln.bias[:e], ln.eps)


# --------------------------------------------------------------------------- extraction


def supernet_param_shapes(shape: SupernetShape) -> dict[str, tuple[int, ...]]:
    """Key -> tensor shape of a full supernet state dict (weight-normalised pos conv), computed
    from the dimensions alone: no model is built, so checking a 95M checkpoint costs nothing."""
    out: dict[str, tuple[int, ...]] = {}
    fe, c_in = shape.frontend, 1
    for i, layer in enumerate(fe.layers):
        p = f"feature_extractor.conv_layers.{i}."
        out[p + "conv.weight"] = (layer.channels, c_in, layer.kernel)
        if fe.conv_bias:
            out[p + "conv.bias"] = (layer.channels,)
        if fe.norm == "layer" or (fe.norm == "group" and i == 0):
            out[p + "layer_norm.weight"] = out[p + "layer_norm.bias"] = (layer.channels,)
        c_in = layer.channels
    e, a, f = shape.embed_dim, shape.attention_dim, shape.ffn_dim
    out["feature_layer_norm.weight"] = out["feature_layer_norm.bias"] = (c_in,)
    out["projection.weight"], out["projection.bias"] = (e, c_in), (e,)
    if shape.mask_emb:
        out["mask_emb"] = (e,)
    k = shape.pos_conv_kernel
    out["pos_conv.weight_g"] = (1, 1, k)
    out["pos_conv.weight_v"] = (e, e // shape.pos_conv_groups, k)
    out["pos_conv.bias"] = (e,)
    out["encoder_layer_norm.weight"] = out["encoder_layer_norm.bias"] = (e,)
    for i in range(shape.layers):
        p = f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj"):
            out[f"{p}attention.{proj}.weight"], out[f"{p}attention.{proj}.bias"] = (a, e), (a,)
        out[f"{p}attention.out_proj.weight"], out[f"{p}attention.out_proj.bias"] = (e, a), (e,)
        out[f"{p}layer_norm.weight"] = out[f"{p}layer_norm.bias"] = (e,)
        out[f"{p}feed_forward.intermediate_dense.weight"] = (f, e)
        out[f"{p}feed_forward.intermediate_dense.bias"] = (f,)
        out[f"{p}feed_forward.output_dense.weight"], out[f"{p}feed_forward.output_dense.bias"] = (e, f), (e,)
        out[f"{p}final_layer_norm.weight"] = out[f"{p}final_layer_norm.bias"] = (e,)
    return out


def _checked_state(sd: Mapping, shape: SupernetShape) -> dict[str, torch.Tensor]:
    """Verify a full supernet state dict strictly; returns it with the pos conv folded into
    `pos_conv.weight` (computed from the full weight_g / weight_v)."""
    expected = supernet_param_shapes(shape)
    sd = dict(sd)
    if "pos_conv.weight" in sd and "pos_conv.weight_v" not in sd:
        # Already folded: accept it in place of g / v.
        e, g, k = shape.embed_dim, shape.pos_conv_groups, shape.pos_conv_kernel
        expected.pop("pos_conv.weight_g")
        expected.pop("pos_conv.weight_v")
        expected["pos_conv.weight"] = (e, e // g, k)
    optional = {"mask_emb", "pred_head.weight"}  # training-only: not part of an extracted model
    missing = sorted(k for k in expected if k not in sd and k not in optional)
    unknown = sorted(k for k in sd if k not in expected and k not in optional)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unknown:
            parts.append(f"unknown {len(unknown)} key(s): {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
        raise FormatError(f"not a supernet state dict for this shape ({'; '.join(parts)}); expected the keys of "
                          "LightHubertSupernet(space).state_dict()")
    bad = [f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if bad:
        raise FormatError(f"supernet state dict has shape mismatches: {'; '.join(bad[:6])}"
                          f"{' ...' if len(bad) > 6 else ''}")
    if "pos_conv.weight_v" in sd:
        v, g = sd.pop("pos_conv.weight_v"), sd.pop("pos_conv.weight_g")
        sd["pos_conv.weight"] = g * v / torch.sqrt((v * v).sum(dim=(0, 1), keepdim=True))
    return sd


def extract(source: LightHubertSupernet | Mapping, subnet=None,
            space: SearchSpace | SupernetShape | str | None = None) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The standalone (ArchSpec, state_dict) of `subnet` (default: the active subnet of a
    supernet, else the space's default). `source` is a LightHubertSupernet or its state dict;
    for a state dict `space` says the container's shape (default: lighthubert-base)."""
    if isinstance(source, LightHubertSupernet):
        if space is None:
            space = source.space if source.space is not None else source.shape
        if subnet is None:
            subnet = source.active_subnet
        raw = source.state_dict()
    elif isinstance(source, Mapping):
        raw = source
        if space is None:
            space = "lighthubert-base"
    else:
        raise UserError(f"extract() takes a LightHubertSupernet or a state dict, got {type(source).__name__}")
    if isinstance(space, SupernetShape):
        shape, sp = space, None
        if not isinstance(subnet, (Subnet, Mapping)):
            raise SubnetError(f"subnet {subnet!r} needs a search space: give a Subnet or a dict with a SupernetShape")
        sub = subnet if isinstance(subnet, Subnet) else Subnet.from_dict(subnet)
    else:
        sp = get_space(space)
        shape = sp.supernet
        sub = sp.resolve(subnet)
    shape.check_fits(sub)
    sd = _checked_state(raw, shape)
    spec = sp.to_arch(sub) if sp is not None else shape.subnet_arch(sub, "subnet")
    return spec, _slice_state(sd, shape, sub)


def _slice_state(sd: Mapping[str, torch.Tensor], shape: SupernetShape, sub: Subnet) -> dict[str, torch.Tensor]:
    e, hd, g = sub.embed_dim, shape.head_dim, shape.pos_conv_groups
    out: dict[str, torch.Tensor] = {}

    def put(key: str, t: torch.Tensor) -> None:
        out[key] = t.detach().clone().contiguous()

    for k, v in sd.items():
        if k.startswith(("feature_extractor.", "feature_layer_norm.")):
            put(k, v)
    put("projection.weight", sd["projection.weight"][:e])
    put("projection.bias", sd["projection.bias"][:e])
    put("pos_conv.weight", sd["pos_conv.weight"][:e, : e // g, :])
    put("pos_conv.bias", sd["pos_conv.bias"][:e])
    for n in ("weight", "bias"):
        put(f"encoder_layer_norm.{n}", sd[f"encoder_layer_norm.{n}"][:e])
    for j, (idx, h, f) in enumerate(zip(shape.keep_map(sub.depth), sub.heads, sub.ffn_dims)):
        src, dst, a = f"layers.{idx}.", f"layers.{j}.", h * hd
        for p in ("q_proj", "k_proj", "v_proj"):
            put(f"{dst}attention.{p}.weight", sd[f"{src}attention.{p}.weight"][:a, :e])
            put(f"{dst}attention.{p}.bias", sd[f"{src}attention.{p}.bias"][:a])
        put(f"{dst}attention.out_proj.weight", sd[f"{src}attention.out_proj.weight"][:e, :a])
        put(f"{dst}attention.out_proj.bias", sd[f"{src}attention.out_proj.bias"][:e])
        rows = torch.tensor(ffn_index(shape, e, f), dtype=torch.long)
        put(f"{dst}feed_forward.intermediate_dense.weight",
            sd[f"{src}feed_forward.intermediate_dense.weight"].index_select(0, rows)[:, :e])
        put(f"{dst}feed_forward.intermediate_dense.bias", sd[f"{src}feed_forward.intermediate_dense.bias"].index_select(0, rows))
        put(f"{dst}feed_forward.output_dense.weight", sd[f"{src}feed_forward.output_dense.weight"][:e].index_select(1, rows))
        put(f"{dst}feed_forward.output_dense.bias", sd[f"{src}feed_forward.output_dense.bias"][:e])
        for ln in ("layer_norm", "final_layer_norm"):
            for n in ("weight", "bias"):
                put(f"{dst}{ln}.{n}", sd[f"{src}{ln}.{n}"][:e])
    return out


# --------------------------------------------------------------------------- presets

# Preset -> the space its --subnet choices come from. Stage 1 is the full model the Base space
# is trained from, so its subnets are the Base space's.
SUPERNET_PRESETS = {"lighthubert-base": "lighthubert-base", "lighthubert-small": "lighthubert-small",
                    "lighthubert-stage1": "lighthubert-base", "tiny-supernet": "tiny-supernet"}


def supernet_space_for_preset(preset_name: str) -> SearchSpace:
    if preset_name not in SUPERNET_PRESETS:
        if not zoo.is_preset(preset_name):
            raise zoo.UnknownPresetError(preset_name)
        raise UserError(f"preset {preset_name!r} is not a supernet, so it has no subnets; --subnet works with "
                        f"{', '.join(sorted(SUPERNET_PRESETS))}")
    return get_space(SUPERNET_PRESETS[preset_name])


def subnet_spec_for_preset(preset_name: str, subnet) -> ArchSpec:
    """ArchSpec of `subnet` ("default" | "max" | "min" | dict | Subnet) of a supernet preset."""
    space = supernet_space_for_preset(preset_name)
    sub = space.resolve(subnet)
    return space.to_arch(sub, name=f"{preset_name}[{sub.describe()}]")


@zoo.register_preset("lighthubert-base", "LightHuBERT Base space, default subnet (640 wide, 10 heads, FFN 2560)")
def lighthubert_base() -> ArchSpec:
    space = get_space("lighthubert-base")
    return space.to_arch(space.default, name="lighthubert-base")


@zoo.register_preset("lighthubert-small", "LightHuBERT Small space, default subnet (384 wide, 6 heads, FFN 1536)")
def lighthubert_small() -> ArchSpec:
    space = get_space("lighthubert-small")
    return space.to_arch(space.default, name="lighthubert-small")


@zoo.register_preset("lighthubert-stage1", "LightHuBERT stage 1: the full HuBERT-Base-shaped supernet (95M)")
def lighthubert_stage1() -> ArchSpec:
    space = get_space("lighthubert-base")
    return space.to_arch(space.largest(), name="lighthubert-stage1")


@zoo.register_preset("tiny-supernet", "test-sized supernet: largest subnet of the tiny space (4 layers x 64)",
                     tiny=True)
def tiny_supernet() -> ArchSpec:
    space = get_space("tiny-supernet")
    return space.to_arch(space.largest(), name="tiny-supernet")
