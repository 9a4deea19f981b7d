"""manifest.json: one per output directory, one entry per artifact file in it.

{"edgekit_manifest": 1, "artifacts": {"<file name>": {...entry...}}}. Exporting another format
into the same directory adds an entry; the file is rewritten atomically each time.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ..runtime.device_main import package_versions, sha256_file  # noqa: F401 (sha256_file: part of this module's API)
from ..errors import FormatError
from .atomic import write_text_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_TOOLS = ("edgekit", "torch", "executorch", "torchao", "onnx", "onnxscript", "onnxruntime", "litert-torch",
          "ai-edge-litert", "ai-edge-quantizer", "numpy")


def tool_versions() -> dict:
    return package_versions(_TOOLS)


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return {"edgekit_manifest": MANIFEST_VERSION, "artifacts": {}}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e}); remove it or export into an empty directory") from None
    if not isinstance(data, dict) or data.get("edgekit_manifest") != MANIFEST_VERSION \
            or not isinstance(data.get("artifacts"), dict):
        raise FormatError(f"{path}: not an edgekit manifest (version {MANIFEST_VERSION}); "
                          "remove it or export into another directory")
    return data


def add_entry(directory: str | os.PathLike, file_name: str, entry: dict) -> Path:
    data = read_manifest(directory)
    data["artifacts"][file_name] = entry
    path = Path(directory) / MANIFEST_NAME
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def entry_for(artifact: str | os.PathLike) -> dict | None:
    """The manifest entry describing `artifact`, or None when its directory has none."""
    artifact = Path(artifact)
    if not (artifact.parent / MANIFEST_NAME).exists():
        return None
    return read_manifest(artifact.parent)["artifacts"].get(artifact.name)
