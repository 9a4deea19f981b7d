"""Read a checkpoint once and tell which format it is, from its keys and structure.

Loading never runs code from the file: torch.load(weights_only=True) first (with
argparse.Namespace allowed, which old fairseq and s3prl checkpoints carry); when a file needs
other classes (training checkpoints often pickle optimiser schedulers or metric objects), a
restricted unpickler rebuilds tensors and plain containers and replaces every other class by an
inert placeholder, so the weights and plain-dict configs survive and nothing else is executed.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import types
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import FormatError

NATIVE_FILENAME = "edgekit.pt"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

FORMATS = ("edgekit", "huggingface", "fairseq", "lighthubert", "torchaudio", "s3prl-distiller", "fithubert")


@dataclass
class Checkpoint:
    """What was read: the loaded object, the path, and for HuggingFace directories the config."""

    path: str
    obj: Any
    hf_config: dict | None = None


# --------------------------------------------------------------------------- reading


def read(path: str) -> Checkpoint:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    if os.path.isdir(path):
        return _read_dir(path)
    if path.endswith(".json"):
        raise FormatError(f"{path}: a JSON file holds no weights; expected a checkpoint file or a "
                          "HuggingFace directory (config.json + weights)")
    if path.endswith(".safetensors"):
        return Checkpoint(path, _read_safetensors(path), _sibling_hf_config(path))
    obj = read_torch(path)
    hf_config = _sibling_hf_config(path) if _is_flat_state_dict(obj) else None
    return Checkpoint(path, obj, hf_config)


def _read_dir(path: str) -> Checkpoint:
    native = os.path.join(path, NATIVE_FILENAME)
    cfg_path = os.path.join(path, "config.json")
    if os.path.isfile(native):
        return Checkpoint(native, read_torch(native))
    if not os.path.isfile(cfg_path):
        raise FormatError(f"{path}: directory has neither config.json (HuggingFace) nor {NATIVE_FILENAME} "
                          "(edgekit); expected a saved model directory")
    config = _read_json(cfg_path)
    for name in HF_WEIGHT_FILES:
        f = os.path.join(path, name)
        if os.path.isfile(f):
            sd = _read_safetensors(f) if name.endswith(".safetensors") else read_torch(f)
            return Checkpoint(path, sd, config)
    for name in HF_INDEX_FILES:
        f = os.path.join(path, name)
        if os.path.isfile(f):
            return Checkpoint(path, _read_sharded(path, f), config)
    raise FormatError(f"{path}: has config.json but no weights; expected one of "
                      f"{', '.join(HF_WEIGHT_FILES + HF_INDEX_FILES)}")


def _read_sharded(folder: str, index_path: str) -> dict:
    index = _read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FormatError(f"{index_path}: no weight_map; expected a HuggingFace shard index")
    sd: dict = {}
    for shard in sorted(set(weight_map.values())):
        f = os.path.join(folder, shard)
        part = _read_safetensors(f) if shard.endswith(".safetensors") else read_torch(f)
        sd.update(part)
    return sd


def _sibling_hf_config(path: str) -> dict | None:
    cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    return _read_json(cfg) if os.path.isfile(cfg) else None


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def _read_safetensors(path: str) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise FormatError(f"{path}: reading .safetensors needs the safetensors package "
                          "(pip install safetensors)") from None
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FormatError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:120]})") from None


def read_torch(path: str) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():
            raise FormatError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # zip / EOF / magic-number errors: the file is not a torch.save file
        raise FormatError(f"{path}: not a PyTorch checkpoint ({_first_line(e)}); expected a file written by "
                          "torch.save, a .safetensors file or a model directory") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)
    except Exception as e:
        raise FormatError(f"{path}: could not read it safely ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(e).__name__


# --------------------------------------------------------------------------- restricted unpickling


_ALLOWED = {
    ("collections", "OrderedDict"), ("argparse", "Namespace"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("builtins", "complex"), ("_codecs", "encode"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"), ("torch", "Size"), ("torch", "device"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class Opaque:
    """Stands in for a pickled object of a class edgekit will not import or run."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self._args = args

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def __repr__(self) -> str:
        return f"<unread {self._qualname}>"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        return type(name, (Opaque,), {"_qualname": f"{module}.{name}"})


def _restricted_load(f: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(f, **kwargs).load()


# The pickle_module torch.load accepts (it reads __name__, Unpickler and load): nothing in it
# can run foreign code.
_restricted_pickle = types.ModuleType("edgekit_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.UnpicklingError = pickle.UnpicklingError
_restricted_pickle.load = _restricted_load


# --------------------------------------------------------------------------- detection


def _is_flat_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _keys(obj: Any) -> list[str]:
    return [k for k in obj if isinstance(k, str)] if isinstance(obj, dict) else []


def looks_like_hf(sd: dict) -> bool:
    return any(k.endswith("feature_extractor.conv_layers.0.conv.weight") for k in sd) and any(
        ".feature_projection.projection.weight" in "." + k for k in sd)


def looks_like_torchaudio_keys(sd: dict) -> bool:
    return any(k.startswith("encoder.transformer.") for k in sd) and any(
        k.startswith("encoder.feature_projection.") for k in sd)


def detect(ck: Checkpoint) -> str:
    """One of FORMATS, or FormatError saying what was found."""
    obj = ck.obj
    if not isinstance(obj, dict):
        raise FormatError(f"{ck.path}: holds a {type(obj).__name__}, not a checkpoint dict; expected a state dict "
                          "or a checkpoint of a supported format (" + ", ".join(FORMATS) + ")")
    if obj.get("format") == "edgekit":
        return "edgekit"
    if ck.hf_config is not None and _is_flat_state_dict(obj):
        return "huggingface"
    if "Distiller" in obj and "Config" in obj:
        return "s3prl-distiller"
    sd = obj.get("state_dict")
    if isinstance(sd, dict) and isinstance(obj.get("config"), dict):
        return "torchaudio"
    if isinstance(sd, dict) and any(isinstance(k, str) and k.startswith("student_model.") for k in sd):
        student = [k for k in sd if isinstance(k, str) and k.startswith("student_model.")]
        if any(k.startswith("student_model.encoder.transformer.") for k in student):
            raise FormatError(f"{ck.path}: a DPHuBERT/torchaudio Lightning training checkpoint (student_model. keys "
                              "in torchaudio layout, no config); expected the pruned file DPHuBERT's prune.py / "
                              "save_final_ckpt.py writes ({'state_dict', 'config'})")
        return "fithubert"
    if _looks_like_lighthubert(obj):
        return "lighthubert"
    if isinstance(obj.get("model"), dict) and ("cfg" in obj or "args" in obj):
        return "fairseq"
    if _is_flat_state_dict(obj):
        if looks_like_hf(obj):
            return "huggingface"
        if looks_like_torchaudio_keys(obj):
            raise FormatError(f"{ck.path}: a bare torchaudio state dict has no config (per-layer widths, strides); "
                              "expected {'state_dict': ..., 'config': wav2vec2_model kwargs}")
        raise FormatError(f"{ck.path}: a state dict with keys like {', '.join(sorted(obj)[:3])}, which matches no "
                          "supported layout (HuggingFace, fairseq, torchaudio, s3prl, FitHuBERT, LightHuBERT)")
    found = ", ".join(repr(k) for k in sorted(_keys(obj))[:6]) or "no string keys"
    raise FormatError(f"{ck.path}: a dict with {found}; expected a checkpoint of a supported format "
                      "(edgekit, HuggingFace, fairseq {'cfg','model'}, torchaudio/DPHuBERT {'state_dict','config'}, "
                      "s3prl {'Distiller','Config'}, FitHuBERT Lightning, LightHuBERT)")


def _looks_like_lighthubert(obj: dict) -> bool:
    try:
        from .lighthubert import looks_like_lighthubert
    except ImportError:
        model = obj.get("model")
        if isinstance(model, dict) and any(isinstance(k, str) and k.startswith("layer_pred_heads.") for k in model):
            raise FormatError("this looks like a LightHuBERT checkpoint (layer_pred_heads.*), but edgekit's "
                              "LightHuBERT importer (edgekit.convert.lighthubert) is not available") from None
        return False
    return bool(looks_like_lighthubert(obj))
