"""The measurement journal: one append-only JSON line per timed block or model.

Block measurements are cached by signature (one line per block, fsynced): an interrupted
profile resumes where it stopped, and a second grid reuses every block the first one measured.
A torn last line (killed mid-write) is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..arch import ArchSpec
from .table import Entry, data_dir


def to_entry(stats: Any) -> Entry:
    """TimingStats (or any object/dict with median_ms, p10_ms, p90_ms, n) -> Entry."""
    get = stats.get if isinstance(stats, dict) else (lambda k: getattr(stats, k))
    med, p10, p90 = float(get("median_ms")), float(get("p10_ms")), float(get("p90_ms"))
    return Entry.ordered(med, p10, p90, int(get("n")))


class MeasurementCache:
    """Append-only journal of measurements for one device/backend/dtype/threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._entries: dict[str, Entry] = {}
        self._probes: dict[str, float] = {}  # speed probe median during each entry's passes
        self._passes: dict[str, list[float]] = {}  # each pass's median, as timed (interleaved jobs)
        # The probe speed every paired timing in this journal is brought to (RuntimeMeasure.bind).
        self.probe_reference_ms: float | None = None
        self._torn = False
        if self.path.exists():
            text = self.path.read_text()
            # A torn last line must not swallow the next record: start a fresh line first.
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                    if "probe_reference_ms" in rec:
                        self.probe_reference_ms = float(rec["probe_reference_ms"])
                        continue
                    self._entries[rec["key"]] = Entry(**rec["entry"])
                    if rec.get("probe_ms"):
                        self._probes[rec["key"]] = float(rec["probe_ms"])
                    else:
                        self._probes.pop(rec["key"], None)
                    if rec.get("passes_ms"):
                        self._passes[rec["key"]] = [float(v) for v in rec["passes_ms"]]
                    else:
                        self._passes.pop(rec["key"], None)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from an interrupted write

    @classmethod
    def for_config(cls, device: str, backend: str, dtype: str, threads: int, root: Path | None = None) -> "MeasurementCache":
        from ..export.report import REWRITES_REVISION
        from ..runtime import TIMING_REVISION

        root = root or (data_dir() / "cache")
        # One journal per export-rewrite revision (what a block costs depends on what it lowers
        # to) and per timing revision of the runner. Revision-1 journals predate the timing suffix.
        rt = TIMING_REVISION.get(backend, 1)
        timing = f"-rt{rt}" if rt > 1 else ""
        return cls(root / f"{device}-{backend}-{dtype}-t{threads}-rw{REWRITES_REVISION}{timing}.jsonl")

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def probe(self, key: str) -> float | None:
        """The speed probe's median while `key` was timed (None: measured without a probe)."""
        return self._probes.get(key)

    def passes(self, key: str) -> list[float] | None:
        """Each timing pass's median for `key`, before any speed rescaling (None: one pass)."""
        return self._passes.get(key)

    def set_probe_reference(self, ms: float) -> None:
        """Record the probe speed this journal's paired timings are brought to (once: the
        entries already in it were timed against it)."""
        if self.probe_reference_ms is not None:
            raise ValueError(f"{self.path}: its probe reference is already {self.probe_reference_ms} ms")
        if not ms > 0:
            raise ValueError(f"probe reference {ms} ms: expected a positive time")
        self._append({"probe_reference_ms": round(ms, 6)})
        self.probe_reference_ms = round(ms, 6)

    def _append(self, rec: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(rec) + "\n"
        if self._torn:
            line, self._torn = "\n" + line, False
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def put(self, key: str, entry: Entry, probe_ms: float | None = None,
            passes_ms: list[float] | None = None) -> None:
        rec: dict[str, Any] = {"key": key, "entry": entry.to_dict()}
        if probe_ms:
            rec["probe_ms"] = round(probe_ms, 6)
        if passes_ms:
            rec["passes_ms"] = [round(v, 6) for v in passes_ms]
        self._append(rec)
        self._entries[key] = entry
        if passes_ms:
            self._passes[key] = rec["passes_ms"]
        else:
            self._passes.pop(key, None)
        if probe_ms:
            self._probes[key] = probe_ms
        else:
            self._probes.pop(key, None)


def model_key(spec: ArchSpec, seconds: float) -> str:
    """Cache key of a whole model: a hash of its ArchSpec JSON (names excluded) and length."""
    d = spec.replace(name="").to_dict()
    h = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    return f"model:{h},s={seconds:g}"
