"""HJ-Pruning / DPHuBERT structured pruning.

HardConcrete gates on: the conv extractor's output channels per layer, the heads of each
attention block, each whole attention block, the FFN units of each layer, each whole FFN block
(the embedding width is not pruned). The expected size (parameters or MACs) is computed from
the gate probabilities with the same formulas as `arch.blocks`, so with hard 0/1 gates it is
exactly `spec.param_count(False)` / `spec.mac_count(seconds)` of the rebuilt static model.
The loss is the teacher distillation loss (L1 - log sigmoid(cos) on several layers) plus the
Lagrangian lambda1 * (s - t) + lambda2 * (s - t)^2 on the expected sparsity s, the target t
ramped linearly from 0 over `warmup_steps`; the multipliers are trained by gradient ascent.

Conv channels are gated after each conv block's GELU, so a closed gate is an all-zero input
channel of the next conv and removing it changes nothing. Two cases are left ungated because
removal would change statistics the gated model computes over all channels: the last conv
layer when a LayerNorm over its channels follows (`feature_layer_norm`), and every layer of a
"layer"-norm extractor. A filterbank frontend has no conv channel gates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import ArchSpec, ConvLayer, LayerSpec, WaveformFrontend, conv_out_len, SAMPLE_RATE
from ..errors import UserError
from ..models import SpeechEncoder, build_model
from ..models.model import _mask_bias, _reduce_valid
from .distill import TeacherMixin, frame_mask, teacher_layer_for
from .gates import HardConcrete
from .losses import cosine_loss, l1_loss
from .trainer import TrainTask

BY = ("params", "macs")
# Adam without momentum on the gates: they follow the multipliers' push at once instead of
# coasting past the target (measured on tiny models: with the default betas the expected
# sparsity overshoots the target by 5 points before it settles).
GATE_BETAS = (0.0, 0.9)


@dataclass(frozen=True)
class PruneConfig:
    target_sparsity: float = 0.75
    by: str = "params"
    warmup_steps: int = 100  # steps over which the target ramps linearly from 0
    gate_lr: float = 0.1
    lambda_lr: float = 0.05
    # A positive start makes the quadratic term a spring towards the target from step 0; with
    # both multipliers at 0, lambda1 winds up during the warm-up and the sparsity overshoots.
    lambda2_init: float = 50.0
    init_keep: float = 0.9  # initial logit of the gates: P(open) = 0.98 with the stretch
    seconds: float = 10.0  # input length the MACs are counted for
    prune_conv: bool = True
    prune_heads: bool = True
    prune_attention: bool = True
    prune_ffn_units: bool = True
    prune_ffn: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sparsity < 1.0:
            raise UserError(f"--target-sparsity {self.target_sparsity} is invalid; expected a fraction "
                            "between 0 and 1 (e.g. 0.75 removes three quarters)")
        if self.by not in BY:
            raise UserError(f"--by {self.by!r} is unknown; expected params or macs")
        if not 0.0 < self.init_keep < 1.0:
            raise UserError(f"gate init_keep {self.init_keep} is invalid; expected 0 < p < 1")
        if self.warmup_steps < 0 or self.seconds <= 0 or self.gate_lr <= 0 or self.lambda_lr <= 0:
            raise UserError("pruning warm-up steps must be >= 0 and seconds, gate and lambda rates > 0")


# --------------------------------------------------------------------------- gates on a model


class PruningGates(nn.Module):
    """All gates of one SpeechEncoder; entries are None where a structure is not gated."""

    def __init__(self, spec: ArchSpec, config: PruneConfig):
        super().__init__()
        self.spec = spec
        conv: list[HardConcrete | None] = []
        p0 = config.init_keep
        fe = spec.frontend
        if isinstance(fe, WaveformFrontend) and config.prune_conv and fe.norm != "layer":
            for i, layer in enumerate(fe.layers):
                last = i == len(fe.layers) - 1
                conv.append(None if last and spec.feature_layer_norm else HardConcrete(layer.channels, p0, min_keep=1))
        self.conv = nn.ModuleList(g if g is not None else nn.Identity() for g in conv)
        self._conv_gated = [g is not None for g in conv]
        def opt(flag, n):  # noqa: E306
            return HardConcrete(n, p0) if flag and n > 0 else nn.Identity()
        self.heads = nn.ModuleList(opt(config.prune_heads, l.heads) for l in spec.layers)
        self.attention = nn.ModuleList(opt(config.prune_attention and l.heads > 0, 1) for l in spec.layers)
        self.ffn_units = nn.ModuleList(opt(config.prune_ffn_units, l.ffn_dim) for l in spec.layers)
        self.ffn = nn.ModuleList(opt(config.prune_ffn and l.ffn_dim > 0, 1) for l in spec.layers)

    @staticmethod
    def _value(g: nn.Module, mode: str, n: int, generator=None) -> torch.Tensor | None:
        """mode: sample (training draw), prob (P(nonzero)), hard (0/1). None when ungated."""
        if not isinstance(g, HardConcrete):
            return None
        if mode == "sample":
            return g.sample(generator)
        if mode == "prob":
            return g.prob_nonzero()
        return g.hard_mask()

    def values(self, mode: str, generator: torch.Generator | None = None) -> dict[str, list]:
        spec = self.spec
        conv = []
        fe = spec.frontend
        if isinstance(fe, WaveformFrontend):
            for i, layer in enumerate(fe.layers):
                g = self.conv[i] if i < len(self.conv) else None
                conv.append(self._value(g, mode, layer.channels, generator) if g is not None else None)
        return {
            "conv": conv,
            "heads": [self._value(g, mode, l.heads, generator) for g, l in zip(self.heads, spec.layers)],
            "attention": [self._value(g, mode, 1, generator) for g in self.attention],
            "ffn_units": [self._value(g, mode, l.ffn_dim, generator) for g, l in zip(self.ffn_units, spec.layers)],
            "ffn": [self._value(g, mode, 1, generator) for g in self.ffn],
        }


def _block_gate(units: torch.Tensor | None, whole: torch.Tensor | None, n: int, ref: torch.Tensor) -> torch.Tensor:
    """Effective gate of a whole block: whole * P(at least one unit open). A block whose units
    are all closed is absent in the static model (no output bias), so the gated model drops it too."""
    g = torch.ones((), device=ref.device, dtype=ref.dtype) if whole is None else whole.reshape(())
    if units is not None:
        g = g * (1.0 - torch.prod(1.0 - units))
    elif n == 0:
        g = g * 0.0
    return g


def expected_size(spec: ArchSpec, gates: dict[str, list], by: str, seconds: float) -> torch.Tensor:
    """Parameters (without training heads) or MACs for `seconds`, as a differentiable function
    of per-unit keep values (probabilities or hard 0/1). Mirrors arch.blocks term by term."""
    samples = int(round(seconds * SAMPLE_RATE))
    ref = next((v for vs in gates.values() for v in vs if v is not None), torch.zeros(()))
    zero = torch.zeros((), device=ref.device, dtype=ref.dtype)

    def width(v, n):
        return zero + n if v is None else v.sum()

    params, macs = zero.clone(), zero.clone()
    fe = spec.frontend
    if isinstance(fe, WaveformFrontend):
        n, c_in = samples, zero + 1
        for i, layer in enumerate(fe.layers):
            n = conv_out_len(n, layer.kernel, layer.stride)
            c = width(gates["conv"][i] if gates["conv"] else None, layer.channels)
            p = c_in * c * layer.kernel + (c if fe.conv_bias else 0)
            if (fe.norm == "group" and i == 0) or fe.norm == "layer":
                p = p + 2 * c
            params = params + p
            macs = macs + n * c_in * c * layer.kernel
            c_in = c
        d_in = c_in
    else:
        # Filterbank frontends are not gated: count them with arch.blocks itself.
        from ..arch import blocks
        fb = [b for b in blocks(spec, seconds) if b.name.startswith("frontend.")]
        params = params + sum(b.params for b in fb)
        macs = macs + sum(b.macs for b in fb)
        n = fe.num_frames(samples)
        d_in = zero + fe.out_dim
    e, t = spec.embed_dim, n
    params = params + d_in * e + e + (2 * d_in if spec.feature_layer_norm else 0) + (e if spec.mask_emb else 0)
    macs = macs + t * d_in * e
    if spec.pos_conv is not None:
        pc = spec.pos_conv
        w = e * (e // pc.groups) * pc.kernel
        params = params + w + e + (pc.kernel if pc.weight_norm else 0) + 2 * e
        macs = macs + t * w
    else:
        params = params + 2 * e
    tr = spec.time_reduction
    frames = spec.layer_frames(samples)
    for i, layer in enumerate(spec.layers):
        if tr is not None and i == tr.before_layer:
            params = params + e * e * tr.kernel + e
            macs = macs + frames[i] * e * e * tr.kernel
        t = frames[i]
        hu, hw = gates["heads"][i], gates["attention"][i]
        a_on = _block_gate(hu, hw, layer.heads, ref)
        a = layer.head_dim * width(hu, layer.heads) * a_on
        fu, fw = gates["ffn_units"][i], gates["ffn"][i]
        f_on = _block_gate(fu, fw, layer.ffn_dim, ref)
        f = width(fu, layer.ffn_dim) * f_on
        params = params + 4 * e * a + 3 * a + e * a_on + 2 * e + 2 * e * f + f + e * f_on + 2 * e
        macs = macs + 4 * t * e * a + 2 * t * t * a + 2 * t * e * f
    if tr is not None and tr.upsample:
        params = params + e * e * tr.factor + e
        macs = macs + t * e * e * tr.factor
    return params if by == "params" else macs


# --------------------------------------------------------------------------- gated forward


def _attention(attn, x, mask_bias, head_gate):
    b, t, _ = x.shape
    h, d = attn.heads, attn.head_dim
    q = (attn.q_proj(x) * attn.scale).view(b, t, h, d).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, h, d).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, h, d).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-1, -2))
    if mask_bias is not None:
        scores = scores + mask_bias
    ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
    if head_gate is not None:
        ctx = ctx * head_gate[None, :, None, None]
    return attn.out_proj(ctx.transpose(1, 2).reshape(b, t, h * d))


def _ffn(ff, x, unit_gate):
    h = F.gelu(ff.intermediate_dense(x))
    if unit_gate is not None:
        h = h * unit_gate
    return ff.output_dense(h)


def gated_forward(model: SpeechEncoder, g: dict[str, list], wave: torch.Tensor,
                  lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """SpeechEncoder.forward with gates applied -> (last_hidden_state, hidden_states)."""
    spec = model.spec
    fe = model.feature_extractor
    if isinstance(spec.frontend, WaveformFrontend):
        x = wave.unsqueeze(1)
        for i, block in enumerate(fe.conv_layers):
            x = block(x)
            gate = g["conv"][i] if g["conv"] else None
            if gate is not None:
                x = x * gate[None, :, None]
        feats = x.transpose(1, 2)
    else:
        feats = fe(wave)
    if model.feature_layer_norm is not None:
        feats = model.feature_layer_norm(feats)
    x = model.projection(feats)
    frames = x.shape[1]
    valid = None
    if lengths is not None:
        valid = torch.arange(frames, device=x.device)[None, :] < model.frame_lengths(lengths)[:, None]
        x = x * valid[..., None].to(x.dtype)
    if model.pos_conv is not None:
        x = x + model.pos_conv(x)
    if not spec.layer_norm_first:
        x = model.encoder_layer_norm(x)
    bias = _mask_bias(valid, x.dtype)
    tr = spec.time_reduction
    hidden = []
    for i, (layer, lspec) in enumerate(zip(model.layers, spec.layers)):
        if tr is not None and i == tr.before_layer:
            x = model.time_reduction(x)
            if valid is not None:
                valid = _reduce_valid(valid, tr.factor, x.shape[1])
                bias = _mask_bias(valid, x.dtype)
        if i == 0:
            hidden.append(x)
        a_on = _block_gate(g["heads"][i], g["attention"][i], lspec.heads, x)
        f_on = _block_gate(g["ffn_units"][i], g["ffn"][i], lspec.ffn_dim, x)
        if spec.layer_norm_first:
            if layer.attention is not None:
                x = x + a_on * _attention(layer.attention, layer.layer_norm(x), bias, g["heads"][i])
            if layer.feed_forward is not None:
                x = x + f_on * _ffn(layer.feed_forward, layer.final_layer_norm(x), g["ffn_units"][i])
        else:
            if layer.attention is not None:
                x = x + a_on * _attention(layer.attention, x, bias, g["heads"][i])
            x = layer.layer_norm(x)
            if layer.feed_forward is not None:
                x = x + f_on * _ffn(layer.feed_forward, x, g["ffn_units"][i])
            x = layer.final_layer_norm(x)
        hidden.append(x)
    if spec.layer_norm_first:
        x = model.encoder_layer_norm(x)
        hidden[-1] = x
    if model.upsampler is not None:
        x = model.upsampler(x, frames)
    return x, tuple(hidden)


# --------------------------------------------------------------------------- static rebuild


def _kept(mask: torch.Tensor | None, n: int) -> torch.Tensor:
    if mask is None:
        return torch.arange(n)
    return torch.nonzero(mask > 0.5).flatten().cpu()


@torch.no_grad()
def rebuild(model: SpeechEncoder, hard: dict[str, list]) -> tuple[SpeechEncoder, ArchSpec]:
    """The smaller static model (and its ArchSpec) that computes what `model` computes with the
    hard gates `hard`: closed channels, heads and units are removed, closed blocks dropped."""
    spec = model.spec.without_heads()
    src = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    new: dict[str, torch.Tensor] = dict(src)
    fe = spec.frontend
    if isinstance(fe, WaveformFrontend):
        conv_layers, prev = [], None
        for i, layer in enumerate(fe.layers):
            keep = _kept(hard["conv"][i] if hard["conv"] else None, layer.channels)
            p = f"feature_extractor.conv_layers.{i}."
            w = src[p + "conv.weight"][keep]
            if prev is not None:
                w = w[:, prev]
            new[p + "conv.weight"] = w
            if p + "conv.bias" in src:
                new[p + "conv.bias"] = src[p + "conv.bias"][keep]
            for name in ("layer_norm.weight", "layer_norm.bias"):
                if p + name in src:
                    new[p + name] = src[p + name][keep]
            conv_layers.append(ConvLayer(int(len(keep)), layer.kernel, layer.stride))
            prev = keep
        new["projection.weight"] = src["projection.weight"][:, prev]
        if spec.feature_layer_norm:
            new["feature_layer_norm.weight"] = src["feature_layer_norm.weight"][prev]
            new["feature_layer_norm.bias"] = src["feature_layer_norm.bias"][prev]
        fe = WaveformFrontend(tuple(conv_layers), norm=fe.norm, conv_bias=fe.conv_bias)
    layers = []
    for i, lspec in enumerate(spec.layers):
        p = f"layers.{i}."
        a_on = _block_gate(hard["heads"][i], hard["attention"][i], lspec.heads, torch.zeros(()))
        heads = 0
        if lspec.heads > 0 and float(a_on) > 0.5:
            kh = _kept(hard["heads"][i], lspec.heads)
            d = lspec.head_dim
            rows = (kh[:, None] * d + torch.arange(d)[None, :]).flatten()
            for proj in ("q_proj", "k_proj", "v_proj"):
                new[p + f"attention.{proj}.weight"] = src[p + f"attention.{proj}.weight"][rows]
                new[p + f"attention.{proj}.bias"] = src[p + f"attention.{proj}.bias"][rows]
            new[p + "attention.out_proj.weight"] = src[p + "attention.out_proj.weight"][:, rows]
            heads = int(len(kh))
        if heads == 0:
            for k in [k for k in new if k.startswith(p + "attention.")]:
                del new[k]
        f_on = _block_gate(hard["ffn_units"][i], hard["ffn"][i], lspec.ffn_dim, torch.zeros(()))
        ffn = 0
        if lspec.ffn_dim > 0 and float(f_on) > 0.5:
            ku = _kept(hard["ffn_units"][i], lspec.ffn_dim)
            q = p + "feed_forward."
            new[q + "intermediate_dense.weight"] = src[q + "intermediate_dense.weight"][ku]
            new[q + "intermediate_dense.bias"] = src[q + "intermediate_dense.bias"][ku]
            new[q + "output_dense.weight"] = src[q + "output_dense.weight"][:, ku]
            ffn = int(len(ku))
        if ffn == 0:
            for k in [k for k in new if k.startswith(p + "feed_forward.")]:
                del new[k]
        layers.append(LayerSpec(heads=heads, ffn_dim=ffn, head_dim=lspec.head_dim))
    name = f"{spec.name}-pruned" if spec.name else "pruned"
    out_spec = spec.replace(frontend=fe, layers=tuple(layers), name=name)
    out = build_model(out_spec)
    out.load_state_dict(new, strict=True)
    return out.eval(), out_spec


# --------------------------------------------------------------------------- the task


def distill_layer_pairs(student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    """DPHuBERT distils layers 0, 4, 8, 12 of a 12-layer model: four evenly spaced points."""
    ids = sorted({round(student_layers * k / 3) for k in range(4)})
    return tuple((s, teacher_layer_for(s, student_layers, teacher_layers)) for s in ids)


class PruneTask(TeacherMixin, TrainTask):
    method = "prune"

    def __init__(self, teacher: SpeechEncoder, model: SpeechEncoder, config: PruneConfig, seed: int = 0):
        super().__init__()
        self.config = config
        if model.spec.heads is not None:
            from .distill import strip_heads
            model, _ = strip_heads(model, model.spec)
        self.model = model
        self.spec = model.spec
        self.gates = PruningGates(self.spec, config)
        t_spec = teacher.spec
        self.pairs = distill_layer_pairs(self.spec.num_layers, t_spec.num_layers)
        torch.manual_seed(seed)
        self.pred = nn.ModuleList(nn.Linear(self.spec.embed_dim, t_spec.embed_dim) for _ in self.pairs)
        if self.spec.embed_dim == t_spec.embed_dim:  # start from "copy the layer", as the student is the teacher
            for lin in self.pred:
                nn.init.eye_(lin.weight)
                nn.init.zeros_(lin.bias)
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.tensor(float(config.lambda2_init)))
        full = {k: [None if v is None else torch.ones_like(v) for v in vs]
                for k, vs in self.gates.values("prob").items()}
        self.full_size = float(expected_size(self.spec, full, config.by, config.seconds))
        self.seed = seed
        self._set_teacher(teacher)

    def target_at(self, step: int) -> float:
        w = self.config.warmup_steps
        return self.config.target_sparsity * (min(1.0, (step + 1) / w) if w else 1.0)

    def expected_sparsity(self) -> torch.Tensor:
        size = expected_size(self.spec, self.gates.values("prob"), self.config.by, self.config.seconds)
        return 1.0 - size / self.full_size

    def forward(self, wave, lengths, step):
        mode = "sample" if self.training else "hard"
        g = self.gates.values(mode, self.step_generator(self.seed, step) if self.training else None)
        last, hidden = gated_forward(self.model, g, wave, lengths)
        t_hidden = self.teacher_states(wave, lengths)
        mask = frame_mask(self.teacher, lengths, t_hidden[0].shape[1])
        distill = 0.0
        metrics = {}
        for (s, t), lin in zip(self.pairs, self.pred):
            p = lin(hidden[s])
            distill = distill + l1_loss(p, t_hidden[t], mask) + cosine_loss(p, t_hidden[t], mask)
        metrics["distill"] = float(distill.detach())
        if not self.training:
            return distill, metrics
        s = self.expected_sparsity()
        tgt = self.target_at(step)
        reg = self.lambda1 * (s - tgt) + self.lambda2 * (s - tgt) ** 2
        metrics.update(expected_sparsity=float(s.detach()), target=tgt, lambda1=float(self.lambda1.detach()),
                       lambda2=float(self.lambda2.detach()))
        return distill + reg, metrics

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        gate_params = list(self.gates.parameters())
        ids = {id(p) for p in gate_params} | {id(self.lambda1), id(self.lambda2)}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        # Gates and multipliers keep a constant rate: a decaying rate would freeze the
        # sparsity before it meets the target.
        # The multipliers are not in the optimizer: before_optimizer_step moves them.
        return [{"params": main, "lr": lr, "weight_decay": weight_decay},
                {"params": gate_params, "lr": self.config.gate_lr, "weight_decay": 0.0, "scheduled": False,
                 "betas": GATE_BETAS}]

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        # The multipliers maximise the Lagrangian: plain gradient ascent, without Adam's
        # momentum, which winds lambda1 up during the target warm-up and overshoots the target.
        for p in (self.lambda1, self.lambda2):
            if p.grad is not None:
                p.add_(p.grad, alpha=self.config.lambda_lr)
                p.grad = None

    def describe(self) -> dict:
        return {"method": self.method, "model": self.spec.to_dict(), "teacher": self.teacher.spec.to_dict(),
                "prune": {k: getattr(self.config, k) for k in ("target_sparsity", "by", "seconds")}}

    @torch.no_grad()
    def export(self) -> tuple[SpeechEncoder, ArchSpec, dict]:
        """Hard gates -> the static model, its ArchSpec and a report whose sizes are the
        analytic counts of that ArchSpec."""
        hard = self.gates.values("hard")
        model, spec = rebuild(self.model, hard)
        # float64 so the size from the hard gates is exact (float32 rounds counts above 2^24).
        hard64 = {k: [None if v is None else v.double() for v in vs] for k, vs in hard.items()}
        cfg = self.config
        full_params = self.spec.param_count(False)
        full_macs = self.spec.mac_count(cfg.seconds)
        params, macs = spec.param_count(False), spec.mac_count(cfg.seconds)
        report = {"by": cfg.by, "target_sparsity": cfg.target_sparsity,
                  "expected_sparsity": float(self.expected_sparsity()),
                  "sparsity": 1.0 - (params / full_params if cfg.by == "params" else macs / full_macs),
                  "params": params, "params_before": full_params, "macs": macs, "macs_before": full_macs,
                  "mac_seconds": cfg.seconds, "hard_size_from_gates": float(expected_size(self.spec, hard64, cfg.by,
                                                                                         cfg.seconds))}
        return model, spec, report
