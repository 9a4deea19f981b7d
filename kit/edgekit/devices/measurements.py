"""Measurements of artifacts on devices, kept with the conditions they were taken under.

A Measurement is one benchmark of one artifact (identified by its sha256) on one device: the
latency summary, model load time, peak memory, and the conditions (threads, pinned CPUs,
warm-up and timed runs, governor and clocks before and after, runtime versions, tool). The
store is one JSON file ($EDGEKIT_DATA_DIR/measurements.json, default
~/.local/share/edgekit/measurements.json), rewritten atomically. Measurements of the same
artifact on the same device under the same conditions are kept together (newest first, at most
KEEP_PER_KEY), so `edgekit bench` can show how a new figure compares with earlier ones.

Nothing is written until a measurement is complete and checked: a failed run leaves the store
as it was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..runtime.device_main import sha256_file
from ..paths import data_dir
from ..errors import FormatError

SCHEMA = "edgekit.measurements/1"
KEEP_PER_KEY = 10
VIAS = ("local", "ssh", "adb")
# Latency figures a tool may report, in ms. Tools differ: minibench gives only mean and
# trimmed mean, onnxruntime_perf_test mean and percentiles, edgekit's runtime all of them.
STAT_KEYS = ("mean_ms", "median_ms", "trimmed_mean_ms", "p10_ms", "p50_ms", "p90_ms", "p95_ms", "std_ms",
             "min_ms", "max_ms")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Measurement:
    device: str
    artifact: str  # file name, for people
    artifact_sha256: str  # identity, for the cache
    format: str  # onnx | tflite | executorch
    via: str  # local | ssh | adb
    tool: str  # edgekit-runtime | minibench | benchmark_model | onnxruntime_perf_test
    stats: dict[str, float]  # subset of STAT_KEYS
    runs: int
    warmup: int
    threads: int | None = None
    affinity: tuple[int, ...] = ()
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    before: dict = field(default_factory=dict)  # cpu state (edgekit.devices.sysinfo shape)
    after: dict = field(default_factory=dict)
    system: dict = field(default_factory=dict)  # hostname / board / getprop identity
    runtime_versions: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    address: str = ""  # user@host or adb serial it was reached at
    measured_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affinity", tuple(int(c) for c in self.affinity))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))
        if not re.fullmatch(r"[0-9a-f]{64}", self.artifact_sha256 or ""):
            raise ValueError(f"artifact_sha256={self.artifact_sha256!r}: expected 64 lower-case hex digits")
        if self.via not in VIAS:
            raise ValueError(f"via={self.via!r}: expected one of {', '.join(VIAS)}")
        if not self.device:
            raise ValueError("a measurement needs a device name")
        unknown = sorted(set(self.stats) - set(STAT_KEYS))
        if unknown:
            raise ValueError(f"unknown latency statistic(s) {', '.join(unknown)}; expected {', '.join(STAT_KEYS)}")
        bad = {k: v for k, v in self.stats.items() if not _finite(v) or v < 0}
        if bad:
            raise ValueError(f"latency statistics must be finite and >= 0, got {bad}")
        if not any(k in self.stats for k in ("median_ms", "trimmed_mean_ms", "mean_ms")):
            raise ValueError("a measurement needs at least one of median_ms, trimmed_mean_ms, mean_ms")
        if not (isinstance(self.runs, int) and self.runs >= 1):
            raise ValueError(f"runs={self.runs!r}: expected an integer >= 1")
        if not (isinstance(self.warmup, int) and self.warmup >= 0):
            raise ValueError(f"warmup={self.warmup!r}: expected an integer >= 0")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"threads={self.threads!r}: expected an integer >= 1 or None")

    @property
    def headline_ms(self) -> float:
        """The one figure to compare: trimmed mean, else median, else mean."""
        for key in ("trimmed_mean_ms", "median_ms", "p50_ms", "mean_ms"):
            if key in self.stats:
                return float(self.stats[key])
        raise RuntimeError("internal error: Measurement without a central latency")  # __post_init__ forbids it

    @property
    def headline_name(self) -> str:
        for key in ("trimmed_mean_ms", "median_ms", "p50_ms", "mean_ms"):
            if key in self.stats:
                return key[:-3].replace("_", " ")
        raise RuntimeError("internal error: Measurement without a central latency")

    def key(self) -> tuple:
        """Same artifact, same device, same conditions -> same key."""
        return (self.device, self.artifact_sha256, self.tool, self.threads, self.affinity)

    def conditions(self) -> dict[str, Any]:
        govs = sorted(set((self.before.get("governor") or {}).values()))
        return {"threads": self.threads, "affinity": list(self.affinity), "warmup": self.warmup, "runs": self.runs,
                "governor": govs, "tool": self.tool, "via": self.via}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["affinity"] = list(self.affinity)
        d["warnings"] = list(self.warnings)
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "measurement") -> "Measurement":
        if not isinstance(data, dict):
            raise FormatError(f"{where}: expected an object, got {type(data).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise FormatError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{where}: {' '.join(str(e).split())}") from None

    def line(self) -> str:
        s = self.stats
        parts = [f"{self.headline_name} {self.headline_ms:.2f} ms"]
        if "p10_ms" in s and "p90_ms" in s:
            parts.append(f"p10 {s['p10_ms']:.2f} / p90 {s['p90_ms']:.2f} ms")
        elif "p50_ms" in s and "p90_ms" in s:
            parts.append(f"p50 {s['p50_ms']:.2f} / p90 {s['p90_ms']:.2f} ms")
        parts.append(f"{self.runs} runs after {self.warmup} warm-up")
        return ", ".join(parts)


def default_store_path() -> Path:
    return data_dir() / "measurements.json"


class MeasurementStore:
    """The measurements file. Reads validate every entry; writes are atomic."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_store_path()

    def load(self) -> list[Measurement]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"{self.path}: not valid JSON ({e.msg}, line {e.lineno}); "
                              "move it aside and measure again") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise FormatError(f"{self.path}: schema {found!r}, expected {SCHEMA!r}; move it aside and measure again")
        items = data.get("measurements")
        if not isinstance(items, list):
            raise FormatError(f"{self.path}: 'measurements' must be a list")
        return [Measurement.from_dict(m, f"{self.path} measurement {i}") for i, m in enumerate(items)]

    def add(self, m: Measurement) -> None:
        """Record `m`; older measurements with the same key beyond KEEP_PER_KEY are dropped."""
        items = [m] + self.load()
        kept, per_key = [], {}
        for x in items:
            n = per_key.get(x.key(), 0)
            if n < KEEP_PER_KEY:
                kept.append(x)
            per_key[x.key()] = n + 1
        self._write(kept)

    def find(self, artifact_sha256: str | None = None, device: str | None = None,
             threads: int | None = None) -> list[Measurement]:
        """Matching measurements, newest first."""
        out = [m for m in self.load()
               if (artifact_sha256 is None or m.artifact_sha256 == artifact_sha256)
               and (device is None or m.device == device)
               and (threads is None or m.threads == threads)]
        return sorted(out, key=lambda m: -m.measured_at)

    def previous(self, m: Measurement) -> list[Measurement]:
        """Earlier measurements under the same conditions as `m` (excluding `m` itself)."""
        return [x for x in self.find(m.artifact_sha256, m.device) if x.key() == m.key() and x != m]

    def _write(self, items: Iterable[Measurement]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"schema": SCHEMA, "measurements": [m.to_dict() for m in items]}, indent=1)
        fd, tmp = tempfile.mkstemp(prefix=".measurements.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# --------------------------------------------------------------------------- artifact identity

_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pte": "executorch"}


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact file, its sha256 and its manifest entry (None without a manifest)."""

    path: Path
    sha256: str
    format: str
    manifest_path: Path | None = None
    manifest: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name


def manifest_candidates(artifact: Path) -> list[Path]:
    """Where an artifact's manifest may sit: `<name>.manifest.json`, `<stem>.manifest.json`,
    then `manifest.json` in the same folder."""
    return [artifact.with_name(artifact.name + ".manifest.json"),
            artifact.with_name(artifact.stem + ".manifest.json"), artifact.with_name("manifest.json")]


def manifest_entry(manifest: dict, artifact_name: str) -> dict | None:
    """The part of a manifest that describes `artifact_name`: edgekit export writes
    {"edgekit_manifest": 1, "artifacts": {name: {sha256, format, dtype, arch, input, ...}}};
    a single-artifact manifest ({"sha256": ...} or {"artifact": {"sha256": ...}}) is the entry."""
    arts = manifest.get("artifacts")
    if isinstance(arts, dict):
        entry = arts.get(artifact_name)
        return entry if isinstance(entry, dict) else None
    if isinstance(manifest.get("artifact"), dict):
        return {**manifest, **manifest["artifact"]}
    return manifest


def _manifest_sha256(entry: dict) -> str | None:
    v = entry.get("sha256")
    return v if isinstance(v, str) else None


def artifact_info(path: str | os.PathLike) -> ArtifactInfo:
    """Hash an artifact and check it against its manifest.

    A manifest that does not match the file, or that declares no sha256, is refused: the
    measurement would be filed under the wrong identity."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: no such artifact file; give the path of an edgekit export output")
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise FormatError(f"{p}: unknown artifact suffix {p.suffix!r}; expected one of {', '.join(_FORMATS)}")
    digest = sha256_file(p)
    for cand in manifest_candidates(p):
        if not cand.is_file():
            continue
        try:
            manifest = json.loads(cand.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FormatError(f"{cand}: manifest is not readable JSON ({e}); re-export the artifact") from None
        if not isinstance(manifest, dict):
            raise FormatError(f"{cand}: manifest must be a JSON object")
        entry = manifest_entry(manifest, p.name)
        if entry is None:
            continue  # a folder manifest that lists other artifacts, not this one
        declared = _manifest_sha256(entry)
        if declared is None:
            raise FormatError(f"{cand}: manifest declares no sha256 for {p.name}; re-export the artifact")
        if declared.lower() != digest:
            raise FormatError(f"{p.name}: sha256 {digest[:12]}… does not match {declared[:12]}… in {cand.name}; "
                              "the file changed after export; re-export it or restore the original")
        return ArtifactInfo(p, digest, fmt, cand, entry)
    return ArtifactInfo(p, digest, fmt)
