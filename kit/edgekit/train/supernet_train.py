"""LightHuBERT supernet training.

Stage 1 distils the teacher into the full-size student (the supernet's largest subnet).
Stage 2 trains the weight-sharing supernet: every step runs the largest subnet, the smallest
and `random_subnets` sampled ones (the sandwich rule) and averages their losses. The target is
the mean of the teacher's last 8 layers (all of them for shallower teachers), predicted from
the student's last layer through a bias-free Linear(E, teacher width) head sliced to [:, :E];
the loss is L1 over valid frames. Subnet sampling is seeded by (seed, step), so every process
and a resumed run draw the same subnets.

The result is written in the LightHuBERT fairseq layout (cfg['model'] + 'model' with
layer_pred_heads.{L-1}.weight) that edgekit.convert.lighthubert reads, so
`edgekit.load(path, subnet=...)` and the search accept it.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from ..errors import UserError
from ..models import SpeechEncoder
from ..space import SearchSpace, get_space
from ..supernet import LightHubertSupernet
from .distill import TeacherMixin, frame_mask, init_from_teacher
from .losses import l1_loss
from .trainer import TrainTask, atomic_torch_save

TARGET_LAYERS = 8


def teacher_target(hidden: tuple[torch.Tensor, ...], last: int = TARGET_LAYERS) -> torch.Tensor:
    """Mean of the teacher's last `last` layer outputs (hidden[0] is the input to layer 1)."""
    layers = hidden[1:]
    return torch.stack(layers[-min(last, len(layers)):], dim=0).mean(dim=0)


class SupernetTask(TeacherMixin, TrainTask):
    method = "lighthubert"
    find_unused_parameters = True  # a subnet leaves rows and layers of the container unused

    def __init__(self, teacher: SpeechEncoder, space: str | SearchSpace, stage: int, random_subnets: int = 2,
                 init: str | None = None, seed: int = 0):
        super().__init__()
        if stage not in (1, 2):
            raise UserError(f"--stage {stage} is invalid; expected 1 (distil into the full model) or 2 (train the supernet)")
        if random_subnets < 0:
            raise UserError(f"--random-subnets {random_subnets} is invalid; expected >= 0")
        self.space = get_space(space)
        self.stage, self.random_subnets, self.seed = stage, random_subnets, seed
        t_dim = teacher.spec.embed_dim
        torch.manual_seed(seed)
        self.net = LightHubertSupernet(self.space, pred_head_dim=t_dim)
        if init is not None:
            load_supernet_weights(self.net, init)
            self.copied = -1
        else:
            self.copied = init_from_teacher(self.net, teacher, skip_prefixes=("pred_head",))
        self._set_teacher(teacher)

    def subnets_for_step(self, step: int) -> list:
        if self.stage == 1:
            return [self.space.largest()]
        rng = random.Random(self.seed * 1_000_003 + step)
        return [self.space.largest(), self.space.smallest()] + [self.space.sample(rng) for _ in range(self.random_subnets)]

    def subnet_loss(self, wave, lengths, subnet, target=None, mask=None) -> torch.Tensor:
        if target is None:
            hidden = self.teacher_states(wave, lengths)
            target = teacher_target(hidden)
            mask = frame_mask(self.teacher, lengths, hidden[0].shape[1])
        self.net.set_subnet(subnet)
        out = self.net(wave, lengths, with_predictions=True)
        return l1_loss(out.predictions[0], target, mask)

    def forward(self, wave, lengths, step):
        hidden = self.teacher_states(wave, lengths)
        target = teacher_target(hidden)
        mask = frame_mask(self.teacher, lengths, hidden[0].shape[1])
        subs = self.subnets_for_step(step) if self.training else [self.space.largest()]
        losses = [self.subnet_loss(wave, lengths, s, target, mask) for s in subs]
        metrics = {"loss_largest": float(losses[0].detach())}
        if len(losses) > 1:
            metrics["loss_smallest"] = float(losses[1].detach())
        return torch.stack(losses).mean(), metrics

    def describe(self) -> dict:
        return {"method": self.method, "space": self.space.name, "stage": self.stage,
                "random_subnets": self.random_subnets, "teacher": self.teacher.spec.to_dict()}

    def save(self, path: str | Path) -> str:
        return save_supernet(self.net, self.space, path)


# --------------------------------------------------------------------------- LightHuBERT layout


def _fairseq_cfg(space: SearchSpace) -> dict:
    shape = space.supernet
    fe = shape.frontend
    cfg = {"_name": "student_hubert", "layer_type": "transformer", "pos_conv_depth": 1, "layer_norm_first": False,
           "conv_feature_layers": repr([(c.channels, c.kernel, c.stride) for c in fe.layers]),
           "extractor_mode": {"group": "default", "layer": "layer_norm"}[fe.norm], "conv_bias": fe.conv_bias,
           "encoder_embed_dim": shape.embed_dim, "encoder_attention_heads": shape.heads,
           "encoder_ffn_embed_dim": shape.ffn_dim, "encoder_layers": shape.layers,
           "conv_pos": shape.pos_conv_kernel, "conv_pos_groups": shape.pos_conv_groups}
    if fe.norm not in ("group", "layer"):
        raise UserError(f"space {space.name}: a {fe.norm!r}-norm extractor has no LightHuBERT layout; use group or layer")
    if space.name in ("lighthubert-base", "lighthubert-small"):
        cfg["supernet_type"] = space.name.split("-")[1]
    else:
        cfg["supernet_type"] = "base"
        cfg["edgekit_space"] = space.name
    return cfg


def save_supernet(net: LightHubertSupernet, space: SearchSpace, path: str | Path) -> str:
    """Write the supernet in the LightHuBERT fairseq layout, atomically."""
    from ..convert.lighthubert import key_map

    mapping = key_map(space.supernet)
    sd = net.state_dict()
    state = {src: sd[dst].detach().cpu().clone() for src, dst in mapping.items() if dst in sd}
    if net.pred_head is not None:
        state[f"layer_pred_heads.{space.supernet.layers - 1}.weight"] = net.pred_head.weight.detach().cpu().clone()
    atomic_torch_save({"cfg": {"model": _fairseq_cfg(space)}, "model": state}, path)
    return str(path)


def load_supernet_weights(net: LightHubertSupernet, path: str | Path) -> None:
    """Initialise `net` from a LightHuBERT-layout checkpoint (e.g. the stage-1 result)."""
    from ..convert.lighthubert import _read, supernet_state

    ckpt = _read(str(path))
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path}: not a LightHuBERT-layout checkpoint (expected 'cfg' and 'model'); give the "
                        "supernet.pt written by `edgekit train-supernet --stage 1`")
    state = supernet_state(ckpt["model"], net.shape)
    missing, unexpected = net.load_state_dict(state, strict=False)
    head_key = f"layer_pred_heads.{net.shape.layers - 1}.weight"
    allowed_missing = {"pred_head.weight"} | ({"mask_emb"} if "mask_emb" not in state else set())
    if unexpected or set(missing) - allowed_missing:
        raise UserError(f"{path}: weights do not fit the space's supernet (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    if net.pred_head is not None and head_key in ckpt["model"]:
        w = ckpt["model"][head_key]
        if tuple(w.shape) == tuple(net.pred_head.weight.shape):
            with torch.no_grad():
                net.pred_head.weight.copy_(w)
