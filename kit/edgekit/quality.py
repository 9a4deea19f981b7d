"""Quality objectives for the search: what "better" means for a candidate.

Two objectives, and the output always says which one ranked the candidates:

- `CapacityObjective` (no checkpoint, the default): a declared capacity measure, the encoder's
  compute: multiply-accumulates of the transformer layers for one second of audio, at the
  frame rate each layer runs at (frontend excluded), higher is better. Parameters alone
  saturate: the largest student (12 x 768 after a filterbank and time reduction) has
  hubert-base's parameters at a fifth of its latency, so a parameter-ranked search left most of
  a generous budget unused. Compute counts width, depth and frame rate, which is what the
  budget buys. It is NOT a measured quality: it says how much model fits in the budget, not
  how well it will work once trained.
- `DistillObjective` (`--supernet CKPT --audio DIR`): each subnet's distillation loss against a
  teacher on that audio, L1 - log sigmoid(cosine) per frame (DistilHuBERT / LightHuBERT), lower
  is better, computed on the targets the supernet was trained on: the mean of the teacher's
  last 8 layers (LightHuBERT stage 2), predicted through the supernet's prediction head when
  it has one. Teacher targets are computed once and cached; subnets run through the
  supernet's elastic forward (set_subnet, no extraction) over the same cached audio batches.
  Without --teacher the teacher is the supernet's largest subnet and its own output is the
  target. `--candidates` models go through the same loss against the same targets.

Supernet checkpoints: LightHuBERT checkpoints (fairseq layout with cfg) as released upstream
and as `edgekit train-supernet` writes them; which space they hold comes from the checkpoint's
config or from --space.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .arch import SAMPLE_RATE
from .errors import FormatError, UserError

# LightHuBERT stage 2 distils the mean of the teacher's last 8 layers.
TARGET_LAYERS = 8


def encoder_gmacs(spec: Any, seconds: float = 1.0) -> float:
    """Transformer-layer GMACs for `seconds` of audio: projections and FFN per frame, plus the
    attention matrix (t x t per head) at each layer's own frame count."""
    e, total = spec.embed_dim, 0
    for layer, t in zip(spec.layers, spec.layer_frames(int(round(seconds * SAMPLE_RATE)))):
        a = layer.heads * layer.head_dim
        total += t * (4 * e * a + 2 * e * layer.ffn_dim) + 2 * t * t * a
    return total / 1e9


class CapacityObjective:
    kind = "capacity"
    measured = False
    higher_is_better = True
    label = "capacity (encoder GMAC per s of audio)"
    description = ("declared capacity measure: multiply-accumulates of the transformer layers per second of "
                   "audio, in GMAC (frontend excluded); quality was NOT measured")

    def evaluate(self, cands: Sequence[Any]) -> None:
        for c in cands:
            if c.quality is None:
                # Parameters break ties between equal compute (e.g. a wider FFN at fewer frames).
                c.quality = round(encoder_gmacs(c.arch), 6) + c.params * 1e-15

    def cost(self, quality: float) -> float:
        """Lower is better for the search."""
        return -quality


@dataclass
class LoadedSupernet:
    net: Any  # LightHubertSupernet
    space: Any  # SearchSpace
    has_pred_head: bool
    path: str


def load_supernet(path: str, space: str | None = None) -> LoadedSupernet:
    """A LightHuBERT-style supernet checkpoint -> the elastic supernet with its weights loaded.
    `space` overrides the space named by the checkpoint's config (base/small)."""
    from .convert.detect import read_torch
    from .convert.lighthubert import _space_for, looks_like_lighthubert, shape_from_cfg, supernet_state
    from .space import get_space
    from .supernet import LightHubertSupernet

    if not os.path.exists(path):
        raise UserError(f"--supernet {path} does not exist; give a LightHuBERT-style supernet checkpoint "
                        "(`edgekit train-supernet` writes one)")
    ckpt = read_torch(path)
    if not looks_like_lighthubert(ckpt):
        found = ", ".join(sorted(map(str, ckpt))[:5]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise FormatError(f"--supernet {path}: not a LightHuBERT-style supernet checkpoint (found {found}); expected "
                          "{'cfg': {'model': ...}, 'model': fairseq-layout state dict with layer_pred_heads}")
    cfg = ckpt.get("cfg", {}).get("model", {}) if isinstance(ckpt.get("cfg"), dict) else {}
    state = ckpt["model"]
    keep_maps = get_space(space).supernet.keep_maps if space is not None else None
    shape = shape_from_cfg(cfg, state, keep_maps)
    full = supernet_state(state, shape)
    sp = _space_for(cfg, shape, space)
    # LightHuBERT's distillation head predicts from the last layer (layer_pred_heads.{L-1}).
    head = state.get(f"layer_pred_heads.{shape.layers - 1}.weight")
    net = LightHubertSupernet(sp, pred_head_dim=int(head.shape[0]) if head is not None else None)
    if head is not None:
        full["pred_head.weight"] = head.float()
    if "mask_emb" not in full:
        full["mask_emb"] = net.mask_emb.detach().clone()
    missing, unexpected = net.load_state_dict(full, strict=False)
    if missing or unexpected:
        raise FormatError(f"--supernet {path}: weights do not fit the supernet (missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]})")
    return LoadedSupernet(net.eval(), sp, head is not None, path)


def load_audio(audio_dir: str, seconds: float, max_items: int = 16, batch_size: int = 4) -> list:
    """Deterministic batches (the first `seconds` of up to `max_items` files) of an audio folder."""
    from .train.data import AudioFolder

    folder = AudioFolder(audio_dir, split="all", crop_seconds=seconds)
    return folder.validation_batches(batch_size, max_items=max_items)


def _frame_mask(frontend, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    n = lengths
    for layer in frontend.layers:
        n = torch.div(n - layer.kernel, layer.stride, rounding_mode="floor") + 1
    return torch.arange(frames)[None, :] < n.clamp(min=0)[:, None]


def distill_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean over valid frames of L1 (per frame, averaged over dims) - log sigmoid(cos)."""
    t = min(pred.shape[1], target.shape[1])
    pred, target = pred[:, :t], target[:, :t]
    per_frame = (pred - target).abs().mean(-1) - F.logsigmoid(F.cosine_similarity(pred, target, dim=-1))
    if mask is None:
        return float(per_frame.mean())
    m = mask[:, :t].to(per_frame.dtype)
    return float((per_frame * m).sum() / m.sum().clamp(min=1.0))


class DistillObjective:
    kind = "distill_loss"
    measured = True
    higher_is_better = False
    label = "distill loss"

    def __init__(self, supernet: LoadedSupernet, batches: list, teacher: Any = None, teacher_name: str = ""):
        self.sn = supernet
        self.batches = batches
        self.teacher_name = teacher_name or "the supernet's largest subnet"
        self.description = (f"distillation loss (L1 - log sigmoid(cos)) against {self.teacher_name} on "
                            f"{sum(len(b.lengths) for b in batches)} audio clip(s); lower is better; measured")
        net = supernet.net
        self._targets: list[torch.Tensor] = []
        with torch.no_grad():
            if teacher is None:
                previous = net.active_subnet
                net.set_subnet(supernet.space.largest())
                for b in batches:
                    self._targets.append(self._supernet_features(b))
                net.set_subnet(previous)
            else:
                for b in batches:
                    hidden = teacher(b.wave, b.lengths).hidden_states[1:]
                    k = min(TARGET_LAYERS, len(hidden))
                    self._targets.append(torch.stack(hidden[-k:]).mean(0))
        self.target_dim = int(self._targets[0].shape[-1])
        self._masks = [_frame_mask(net.shape.frontend, b.lengths, t.shape[1]) for b, t in zip(batches, self._targets)]

    def _supernet_features(self, batch) -> torch.Tensor:
        out = self.sn.net(batch.wave, batch.lengths, with_predictions=self.sn.has_pred_head)
        return out.predictions[0] if self.sn.has_pred_head else out.last_hidden_state

    def _check_dim(self, feats: torch.Tensor, what: str) -> None:
        if feats.shape[-1] != self.target_dim:
            raise UserError(f"{what} gives {feats.shape[-1]}-dim features but the teacher targets are "
                            f"{self.target_dim}-dim; use a supernet with a prediction head (layer_pred_heads) "
                            "or a teacher of the same width")

    @torch.no_grad()
    def subnet_loss(self, subnet) -> float:
        net = self.sn.net
        net.set_subnet(subnet)
        total = 0.0
        for b, target, mask in zip(self.batches, self._targets, self._masks):
            feats = self._supernet_features(b)
            self._check_dim(feats, f"subnet {subnet.describe()}")
            total += distill_loss(feats, target, mask)
        return total / len(self.batches)

    @torch.no_grad()
    def model_loss(self, model: Any, name: str) -> float:
        """An already-trained model (a --candidates entry) on the same targets: its last hidden
        state, or its last prediction head when the hidden state has another width."""
        total = 0.0
        for b, target, mask in zip(self.batches, self._targets, self._masks):
            out = model(b.wave, b.lengths, with_predictions=True)
            feats = out.last_hidden_state
            if feats.shape[-1] != self.target_dim and out.predictions:
                feats = out.predictions[-1]
            self._check_dim(feats, f"candidate {name}")
            total += distill_loss(feats, target, mask)
        return total / len(self.batches)

    def evaluate(self, cands: Sequence[Any]) -> None:
        from .space import Subnet

        for c in cands:
            if c.quality is not None:
                continue
            if isinstance(c.genotype, Subnet):
                c.quality = self.subnet_loss(c.genotype)
            elif c.model is not None:
                c.quality = self.model_loss(c.model, c.source)
            else:
                raise RuntimeError(f"internal error: candidate {c.arch.name} has neither a subnet nor a model")

    def cost(self, quality: float) -> float:
        return quality


__all__ = ["CapacityObjective", "DistillObjective", "LoadedSupernet", "TARGET_LAYERS", "distill_loss",
           "load_audio", "load_supernet"]
