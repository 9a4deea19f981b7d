"""edgekit's own checkpoint: one torch.save file holding the ArchSpec and the state dict.

{"format": "edgekit", "version": 1, "arch": spec.to_dict(), "state_dict": {...}, "source": ...}
Plain tensors and JSON-able values only, so it loads with torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import torch

from ..arch import ArchSpec
from ..errors import FormatError
from .common import KeyMapper, finish

FORMAT, VERSION = "edgekit", 1


def save(model_or_state: torch.nn.Module | dict, spec: ArchSpec, path: str | os.PathLike,
         source: dict | None = None) -> str:
    """Write model weights + ArchSpec atomically (temp file in the same folder, then os.replace).
    A directory path gets the file `edgekit.pt` inside it. Returns the file written."""
    from .detect import NATIVE_FILENAME

    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else dict(model_or_state)
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict[{k!r}] is a {type(v).__name__}, not a tensor")
    if spec.pos_conv is not None and spec.pos_conv.weight_norm and "pos_conv.weight" in state:
        # A model after prepare_for_export() carries the folded weight: describe what is saved.
        spec = spec.replace(pos_conv=dataclasses.replace(spec.pos_conv, weight_norm=False))
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, NATIVE_FILENAME)
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arch": spec.to_dict(),
                               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()}}
    if source is not None:
        payload["source"] = source
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".edgekit-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_native(obj: dict, where: str = "edgekit checkpoint") -> tuple[torch.nn.Module, ArchSpec]:
    version = obj.get("version")
    if version != VERSION:
        raise FormatError(f"{where}: edgekit format version {version!r}; this edgekit reads version {VERSION} "
                          "(upgrade edgekit or re-save the model)")
    unknown = sorted(set(obj) - {"format", "version", "arch", "state_dict", "source"})
    if unknown:
        raise FormatError(f"{where}: unexpected top-level entries {', '.join(map(repr, unknown))}; expected format, "
                          "version, arch, state_dict, source")
    try:
        spec = ArchSpec.from_dict(obj.get("arch"))
    except ValueError as e:
        raise FormatError(f"{where}: invalid arch: {e}") from None
    sd = obj.get("state_dict")
    if not isinstance(sd, dict):
        raise FormatError(f"{where}: state_dict is a {type(sd).__name__}; expected a dict of tensors")
    mapper = KeyMapper(sd, "edgekit")
    for key in sd:
        mapper.move(key, key)
    return finish(spec, mapper), spec
