"""Strict checkpoint importers: `load(source, subnet=None) -> (model, ArchSpec)` and `save`.

Formats (one module each): edgekit's own file (native), HuggingFace transformers HubertModel /
Wav2Vec2Model and their ForCTC variants (huggingface), fairseq HuBERT (fairseq), LightHuBERT
(lighthubert), torchaudio and DPHuBERT (torchaudio), s3prl DistilHuBERT (s3prl) and FitHuBERT
Lightning checkpoints (fithubert). detect reads a file once and names its format. Every
importer maps each source key explicitly; unknown, missing or mis-shaped keys raise
FormatError listing them, and nothing is ever loaded partially.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..arch import ArchSpec
from ..errors import FormatError, UserError
from .detect import Checkpoint, detect, read
from .native import save

__all__ = ["load", "load_checkpoint", "save", "detect_format", "FormatError"]


def detect_format(path: str | os.PathLike) -> str:
    """The format name of a checkpoint file or directory (see detect.FORMATS)."""
    return detect(read(os.fspath(path)))


def load(source: str | os.PathLike, subnet: Any = None) -> tuple[torch.nn.Module, ArchSpec]:
    """A preset name (random weights, seeded) or a checkpoint path -> (eval-mode model, ArchSpec)."""
    from .. import zoo

    if isinstance(source, str) and not os.path.exists(source) and zoo.is_preset(source):
        if subnet is not None:
            from ..supernet import subnet_spec_for_preset  # the supernet owns subnet choice for presets
            from ..models import build_model

            spec = subnet_spec_for_preset(source, subnet)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return build_model(spec).eval(), spec
        return zoo.create_model(source), zoo.get_spec(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise zoo.UnknownPresetError(path) if isinstance(source, str) and os.sep not in path and not os.path.splitext(
            path)[1] else FileNotFoundError(2, "No such file or directory", path)
    return load_checkpoint(read(path), subnet)


def load_checkpoint(ck: Checkpoint, subnet: Any = None) -> tuple[torch.nn.Module, ArchSpec]:
    fmt = detect(ck)
    name = _name_for(ck.path)
    if subnet is not None and fmt != "lighthubert":
        raise UserError(f"{ck.path}: subnet={subnet!r} given, but a {fmt} checkpoint is one fixed model; subnets "
                        "apply to LightHuBERT supernet checkpoints only")
    obj = ck.obj
    if fmt == "edgekit":
        from .native import load_native
        return load_native(obj, ck.path)
    if fmt == "huggingface":
        from .huggingface import load_huggingface
        return load_huggingface(obj, ck.hf_config, name)
    if fmt == "fairseq":
        from .fairseq import load_fairseq
        return load_fairseq(obj, name)
    if fmt == "lighthubert":
        from .lighthubert import load_lighthubert
        return load_lighthubert(obj, "default" if subnet is None else subnet)
    if fmt == "torchaudio":
        from .torchaudio import load_torchaudio
        return load_torchaudio(obj, name)
    if fmt == "s3prl-distiller":
        from .s3prl import load_s3prl
        return load_s3prl(obj, name)
    if fmt == "fithubert":
        from .fithubert import load_fithubert
        return load_fithubert(obj, name=name)
    raise AssertionError(f"internal error: detect() returned unknown format {fmt!r}")


def _name_for(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    return os.path.splitext(base)[0] or base
