"""DistilHuBERT and FitHuBERT distillation tasks, and the teacher/student plumbing they share
with pruning and supernet training.

Teacher layer k (1-based) is `hidden_states[k]` of a SpeechEncoder; `hidden_states[0]` is the
input to layer 1. The teacher runs frozen, in eval mode and without gradients, and is held
outside the task's registered modules (not trained, not saved, not synchronised by DDP).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..arch import ArchSpec, DistillHeads, LayerwiseHeads
from ..errors import UserError
from ..models import SpeechEncoder, build_model
from .losses import distilhubert_loss, fithubert_loss
from .trainer import TrainTask

METHODS = ("distilhubert", "fithubert")


# --------------------------------------------------------------------------- models in and out


def resolve_spec(source: str) -> ArchSpec:
    """A preset name or an ArchSpec JSON file -> ArchSpec."""
    from .. import zoo

    if zoo.is_preset(source):
        return zoo.get_spec(source)
    if source.endswith(".json") and os.path.exists(source):
        try:
            return ArchSpec.from_json(Path(source).read_text())
        except ValueError as e:
            raise UserError(f"{source}: not a valid ArchSpec ({e}); write one with `edgekit inspect --json`") from None
    raise UserError(f"{source!r} is neither a preset nor an ArchSpec .json file; `edgekit models --all` "
                    "lists the presets")


def resolve_model(source: str, seed: int = 0, subnet=None) -> tuple[SpeechEncoder, ArchSpec]:
    """A preset (random weights, seeded), an ArchSpec JSON (random weights) or a checkpoint that
    `edgekit.load` reads -> (model, spec)."""
    from .. import zoo

    if zoo.is_preset(source) and subnet is None:
        return zoo.create_model(source, seed=seed), zoo.get_spec(source)
    if source.endswith(".json") and os.path.exists(source):
        spec = resolve_spec(source)
        torch.manual_seed(seed)
        return build_model(spec), spec
    import edgekit

    model, spec = edgekit.load(source, subnet=subnet)
    return model, spec


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def init_from_teacher(student: nn.Module, teacher: nn.Module, skip_prefixes: tuple[str, ...] = ("heads.",)) -> int:
    """Copy every teacher tensor whose name and shape match the student's (frontend, projection,
    positional conv, layer i from teacher layer i). Returns the number of tensors copied."""
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    copied = 0
    for name, value in s_state.items():
        if name.startswith(skip_prefixes):
            continue
        src = t_state.get(name)
        if src is not None and src.shape == value.shape:
            value.copy_(src)
            copied += 1
    return copied


def frame_mask(model: SpeechEncoder, lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, frames] True for frames computed from real (non-padding) samples."""
    n = model.frame_lengths(lengths)
    return torch.arange(frames, device=lengths.device)[None, :] < n[:, None]


class TeacherMixin:
    """Holds a frozen teacher without registering it as a submodule."""

    def _set_teacher(self, teacher: SpeechEncoder) -> None:
        object.__setattr__(self, "_teacher", freeze(teacher))

    def _build_student(self, spec: ArchSpec, teacher: SpeechEncoder, init_from: bool, seed: int) -> None:
        """Seeded student, initialised from the teacher's layers where shapes allow."""
        torch.manual_seed(seed)
        self.student = build_model(spec)
        self.copied = init_from_teacher(self.student, teacher) if init_from else 0
        self._set_teacher(teacher)

    @property
    def teacher(self) -> SpeechEncoder:
        return self._teacher

    def _apply(self, fn, *args, **kwargs):  # keep the teacher on the task's device
        out = super()._apply(fn, *args, **kwargs)
        object.__setattr__(self, "_teacher", self._teacher._apply(fn, *args, **kwargs))
        return out

    @torch.no_grad()
    def teacher_states(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.teacher(wave, lengths).hidden_states


def strip_heads(model: SpeechEncoder, spec: ArchSpec) -> tuple[SpeechEncoder, ArchSpec]:
    """The inference model: same weights, training heads dropped."""
    bare = spec.without_heads()
    out = build_model(bare)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    out.load_state_dict(state, strict=True)
    return out.eval(), bare


def save_final(model: SpeechEncoder, spec: ArchSpec, out_dir: str | Path, name: str = "model.pt") -> str:
    """Write the final model with edgekit's native format (edgekit.convert.save) so that
    `edgekit.load`, `inspect`, `export` and `search --candidates` accept it; also the ArchSpec JSON."""
    from ..convert import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    save(model, spec, str(path))
    tmp = out / (name + ".arch.json.tmp")
    tmp.write_text(spec.to_json())
    os.replace(tmp, out / "arch.json")
    return str(path)


# --------------------------------------------------------------------------- tasks


def teacher_layer_for(student_layer: int, student_layers: int, teacher_layers: int) -> int:
    """Student layer l of Ls maps to teacher layer round(l * Lt / Ls) (same depth: identity)."""
    return max(0, min(teacher_layers, round(student_layer * teacher_layers / student_layers)))


def _check_target_dim(target_dim: int, t_spec: ArchSpec) -> None:
    if target_dim != t_spec.embed_dim:
        raise UserError(f"student heads predict {target_dim}-dim targets but the teacher is "
                        f"{t_spec.embed_dim} wide; set heads.target_dim to {t_spec.embed_dim}")


class DistilHubertTask(TeacherMixin, TrainTask):
    """Prediction heads on the student's last layer predict teacher layers (default 4, 8, 12);
    loss per target L1 - log sigmoid(cos), summed."""

    method = "distilhubert"

    def __init__(self, teacher: SpeechEncoder, student_spec: ArchSpec, targets: tuple[int, ...] | None = None,
                 init_from: bool = True, seed: int = 0):
        super().__init__()
        t_spec: ArchSpec = teacher.spec
        heads = student_spec.heads
        if heads is None:
            if targets is None:
                lt = t_spec.num_layers
                targets = tuple(sorted({max(1, round(lt * k / 3)) for k in (1, 2, 3)}))
            heads = DistillHeads(targets=tuple(targets), target_dim=t_spec.embed_dim)
            student_spec = student_spec.replace(heads=heads)
        if not isinstance(heads, DistillHeads):
            raise UserError(f"student {student_spec.name or 'spec'} has {type(heads).__name__}; the distilhubert "
                            "method needs DistillHeads (or no heads, to add them)")
        _check_target_dim(heads.target_dim, t_spec)
        bad = [t for t in heads.targets if t > t_spec.num_layers]
        if bad:
            raise UserError(f"target layer(s) {bad} exceed the teacher's {t_spec.num_layers} layers")
        self.spec = student_spec
        self._build_student(student_spec, teacher, init_from, seed)

    def forward(self, wave, lengths, step):
        out = self.student(wave, lengths, with_predictions=True)
        hidden = self.teacher_states(wave, lengths)
        targets = [hidden[t] for t in self.spec.heads.targets]
        mask = frame_mask(self.student, lengths, out.last_hidden_state.shape[1])
        return distilhubert_loss(out.predictions, targets, mask)

    def describe(self) -> dict:
        return {"method": self.method, "student": self.spec.to_dict(), "teacher": self.teacher.spec.to_dict()}

    def export(self) -> tuple[SpeechEncoder, ArchSpec]:
        return strip_heads(self.student, self.spec)


class FitHubertTask(TeacherMixin, TrainTask):
    """Per-layer heads (upsampling when the student reduces time) predict teacher layers;
    MSE with hint weights: the last listed layer 1.0, the others `hint_weight` (0.1)."""

    method = "fithubert"

    def __init__(self, teacher: SpeechEncoder, student_spec: ArchSpec, hint_weight: float = 0.1,
                 init_from: bool = True, seed: int = 0):
        super().__init__()
        t_spec: ArchSpec = teacher.spec
        heads = student_spec.heads
        if heads is None:
            heads = LayerwiseHeads(layers=tuple(range(1, student_spec.num_layers + 1)), target_dim=t_spec.embed_dim)
            student_spec = student_spec.replace(heads=heads)
        if not isinstance(heads, LayerwiseHeads):
            raise UserError(f"student has {type(heads).__name__}; the fithubert method needs LayerwiseHeads "
                            "(or no heads, to add one per layer)")
        _check_target_dim(heads.target_dim, t_spec)
        self.spec = student_spec
        ls, lt = student_spec.num_layers, t_spec.num_layers
        self.targets = tuple(teacher_layer_for(layer, ls, lt) for layer in heads.layers)
        last = max(heads.layers)
        self.weights = tuple(1.0 if layer == last else hint_weight for layer in heads.layers)
        self._build_student(student_spec, teacher, init_from, seed)

    def forward(self, wave, lengths, step):
        out = self.student(wave, lengths, with_predictions=True)
        hidden = self.teacher_states(wave, lengths)
        targets = [hidden[t] for t in self.targets]
        t_frames = hidden[0].shape[1]
        mask = frame_mask(self.teacher, lengths, t_frames)
        return fithubert_loss(out.predictions, targets, self.weights, mask)

    def describe(self) -> dict:
        return {"method": self.method, "student": self.spec.to_dict(), "teacher": self.teacher.spec.to_dict(),
                "weights": list(self.weights)}

    def export(self) -> tuple[SpeechEncoder, ArchSpec]:
        return strip_heads(self.student, self.spec)


def make_distill_task(method: str, teacher: SpeechEncoder, student_spec: ArchSpec, seed: int = 0) -> TrainTask:
    if method == "distilhubert":
        return DistilHubertTask(teacher, student_spec, seed=seed)
    if method == "fithubert":
        return FitHubertTask(teacher, student_spec, seed=seed)
    raise UserError(f"--method {method!r} is unknown; expected one of {', '.join(METHODS)}")
