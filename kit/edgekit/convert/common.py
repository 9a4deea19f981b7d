"""Shared pieces of the strict importers: the key mapper, config readers, the final strict load.

Every importer is a pure function: it reads the checkpoint's own config into an ArchSpec, then
maps every source key to an edgekit key (with a reshape where the layouts differ). The
KeyMapper remembers which source keys were used and which were dropped on purpose (with the
reason); anything left over is an error, as is any key the built model expects but did not get,
and any shape that does not match. Nothing is ever loaded partially.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch

from ..arch import ArchSpec
from ..errors import FormatError
from ..models import build_model

StateDict = dict[str, torch.Tensor]
_SHOW = 5  # how many offending keys an error names before "(+N more)"


def fmt_keys(keys: Iterable[str], show: int = _SHOW) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:show])
    return head + (f" (+{len(keys) - show} more)" if len(keys) > show else "")


# --------------------------------------------------------------------------- config readers


class Config:
    """Read-only view of a checkpoint's config dict that raises FormatError naming the format
    and the field when a value is missing or has the wrong type."""

    def __init__(self, data: Mapping[str, Any], where: str):
        self.data, self.where = data, where

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if not self.has(key):
            if default is ...:
                raise FormatError(f"{self.where}: config has no {key!r}; expected it in a {self.where} config")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if int in kinds and bool not in kinds and isinstance(value, bool):
            raise FormatError(f"{self.where}: config {key}={value!r} is a bool; expected an integer")
        if not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise FormatError(f"{self.where}: config {key}={value!r} has type {type(value).__name__}; expected {names}")
        return value

    def require_value(self, key: str, allowed: Iterable[Any], default: Any = ..., why: str = "") -> Any:
        allowed = tuple(allowed)
        value = self.get(key, object, default)
        if value not in allowed:
            hint = f" ({why})" if why else ""
            raise FormatError(f"{self.where}: config {key}={value!r} is not supported; edgekit handles "
                              f"{' or '.join(repr(a) for a in allowed)}{hint}")
        return value

    def int_list(self, key: str, length: int | None = None) -> list[int]:
        value = self.get(key, (list, tuple))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise FormatError(f"{self.where}: config {key}={value!r} must be a list of integers")
        if length is not None and len(value) != length:
            raise FormatError(f"{self.where}: config {key} has {len(value)} entries; expected {length}")
        return list(value)

    def bool_list(self, key: str, length: int) -> list[bool]:
        value = self.get(key, (list, tuple))
        if len(value) != length or not all(isinstance(v, bool) for v in value):
            raise FormatError(f"{self.where}: config {key}={value!r} must be {length} booleans")
        return list(value)


def parse_layer_list(text: Any, where: str, field_name: str) -> list[tuple[int, int, int]]:
    """fairseq-style conv layer strings such as "[(512,10,5)] + [(512,3,2)] * 4" (or an already
    parsed list), evaluated without eval(): only list/tuple literals of ints, + and * are allowed."""
    if isinstance(text, (list, tuple)):
        value = [tuple(v) for v in text]
    elif isinstance(text, str):
        try:
            value = _safe_literal(ast.parse(text, mode="eval").body)
        except (SyntaxError, ValueError, TypeError) as e:
            raise FormatError(f"{where}: {field_name}={text!r} is not a list of (channels, kernel, stride) "
                              f"tuples ({e})") from None
    else:
        raise FormatError(f"{where}: {field_name}={text!r} is not a list of (channels, kernel, stride) tuples")
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: {field_name}={text!r} must be a non-empty list")
    out = []
    for item in value:
        item = tuple(item) if isinstance(item, (list, tuple)) else item
        if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(v, int) for v in item)):
            raise FormatError(f"{where}: {field_name} entry {item!r} is not a (channels, kernel, stride) tuple")
        out.append(item)
    return out


def _safe_literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.List):
        return [_safe_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_safe_literal(e) for e in node.elts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _safe_literal(node.left), _safe_literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported expression {ast.dump(node)[:40]}")


# --------------------------------------------------------------------------- key mapping


@dataclass
class KeyMapper:
    """Collects source -> edgekit key moves. `source` is the checkpoint state dict (already
    stripped of any wrapper prefix); `where` names the format in error messages."""

    source: Mapping[str, torch.Tensor]
    where: str
    out: StateDict = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason

    def has(self, key: str) -> bool:
        return key in self.source

    def has_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.source)

    def move(self, src: str, dst: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Map one key. A missing source key is recorded as missing under its edgekit name so
        the final check lists it."""
        if src not in self.source:
            return
        t = self.source[src]
        if not isinstance(t, torch.Tensor):
            raise FormatError(f"{self.where}: {src} holds a {type(t).__name__}, not a tensor")
        self.used.add(src)
        self.out[dst] = transform(t) if transform is not None else t

    def move_prefix(self, src_prefix: str, dst_prefix: str, names: Iterable[str] = ("weight", "bias")) -> None:
        for name in names:
            self.move(src_prefix + name, dst_prefix + name)

    def put(self, dst: str, tensor: torch.Tensor) -> None:
        """A value edgekit needs that the source describes implicitly (e.g. an identity
        projection where the source has none)."""
        self.out[dst] = tensor

    def drop(self, key_or_prefix: str, reason: str) -> None:
        """Drop keys on purpose, by exact name or by a prefix ending in '.'."""
        for k in self.source:
            if k == key_or_prefix or (key_or_prefix.endswith(".") and k.startswith(key_or_prefix)):
                self.used.add(k)
                self.dropped[k] = reason

    def unused(self) -> list[str]:
        return sorted(set(self.source) - self.used)

    def weight_norm_conv(self, src_prefix: str, dst_prefix: str) -> bool:
        """Move a weight-normalised conv in either layout (weight_g/weight_v, or torch's
        parametrizations.weight.original0/1), or a plain weight. Returns whether the source
        carries a weight norm (the spec must agree)."""
        pg, pv = src_prefix + "parametrizations.weight.original0", src_prefix + "parametrizations.weight.original1"
        if self.has(src_prefix + "weight_g") or self.has(src_prefix + "weight_v"):
            self.move(src_prefix + "weight_g", dst_prefix + "weight_g")
            self.move(src_prefix + "weight_v", dst_prefix + "weight_v")
            norm = True
        elif self.has(pg) or self.has(pv):
            self.move(pg, dst_prefix + "weight_g")
            self.move(pv, dst_prefix + "weight_v")
            norm = True
        else:
            self.move(src_prefix + "weight", dst_prefix + "weight")
            norm = False
        self.move(src_prefix + "bias", dst_prefix + "bias")
        return norm


def has_weight_norm(source: Mapping[str, Any], prefix: str) -> bool:
    return any(prefix + s in source for s in ("weight_g", "weight_v", "parametrizations.weight.original0",
                                              "parametrizations.weight.original1"))


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def identity_linear(dim: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.eye(dim, dtype=dtype), torch.zeros(dim, dtype=dtype)


def finish(spec: ArchSpec, mapper: KeyMapper) -> torch.nn.Module:
    """Build the model and load the mapped weights strictly, or raise FormatError listing every
    unknown source key, every missing edgekit key and every shape mismatch."""
    unknown = mapper.unused()
    if unknown:
        raise FormatError(f"{mapper.where}: {len(unknown)} checkpoint key(s) edgekit does not understand: "
                          f"{fmt_keys(unknown)}; expected only keys of the {mapper.where} layout "
                          "(refusing to load partially)")
    model = build_model(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapper.out))
    extra = sorted(set(mapper.out) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {fmt_keys(missing)}")
    if extra:
        # A source key mapped onto a name the spec does not have: the config and the weights disagree.
        problems.append(f"{len(extra)} not in the model its config describes: {fmt_keys(extra)}")
    bad_shapes = [f"{k} {tuple(mapper.out[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in sorted(set(expected) & set(mapper.out)) if mapper.out[k].shape != expected[k].shape]
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatch(es) (checkpoint vs config): {fmt_keys(bad_shapes, 3)}")
    if problems:
        raise FormatError(f"{mapper.where}: weights do not match the architecture in its config: "
                          + "; ".join(problems) + " (refusing to load partially)")
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in mapper.out.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
