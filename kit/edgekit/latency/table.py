"""Latency tables: schema `edgekit.latency-table/1`, validation, atomic I/O and lookup.

A table holds, for one device, backend, dtype and thread count, the measured (or estimated)
latency of block signatures, a whole-model correction and the provenance of every figure.
docs/latency-tables.md documents the format. Loading validates everything and refuses a
malformed or mismatched table with one line saying what was found and what was expected.

Where tables live: measured tables written by `edgekit profile` go to the user data dir
($EDGEKIT_DATA_DIR/tables, default ~/.local/share/edgekit/tables) and are found again by
device, backend and dtype; estimated tables ship inside the package (edgekit/data/tables).
A measured table always beats an estimated one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arch import ArchSpec
from ..paths import data_dir
from ..errors import FormatError, UserError
from .signature import parse_key

SCHEMA = "edgekit.latency-table/1"
BACKENDS = ("executorch", "onnx", "tflite")
DTYPES = ("fp32", "int8")
METHODS = ("measured", "estimated")


def _bad(where: str, what: str) -> FormatError:
    return FormatError(f"{where}: {what}")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Entry:
    """Latency of one block signature in milliseconds: median, 10th and 90th percentile, runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int

    def __post_init__(self) -> None:
        if not all(_num(v) for v in (self.median_ms, self.p10_ms, self.p90_ms)):
            raise ValueError("median_ms, p10_ms and p90_ms must be finite numbers")
        if self.median_ms <= 0:
            raise ValueError(f"median_ms={self.median_ms} must be > 0")
        if not (self.p10_ms <= self.median_ms <= self.p90_ms):
            raise ValueError(f"expected p10_ms <= median_ms <= p90_ms, got {self.p10_ms}, "
                             f"{self.median_ms}, {self.p90_ms}")
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"n={self.n!r} must be an integer >= 1")

    @classmethod
    def ordered(cls, median_ms: float, p10_ms: float, p90_ms: float, n: int) -> "Entry":
        """An entry whose percentiles were computed apart from its median (rescaled, combined,
        from few runs): rounding can put them a hair across it, so they are clamped to keep
        the schema's order."""
        return cls(median_ms, min(p10_ms, median_ms), max(p90_ms, median_ms), n)

    def to_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ms, 6), "p10_ms": round(self.p10_ms, 6),
                "p90_ms": round(self.p90_ms, 6), "n": self.n}


@dataclass(frozen=True)
class Correction:
    """whole model ms = scale * (sum of its blocks' ms) + per_block_ms * (number of blocks),
    where a block of a kind in `kind_scale` counts kind_scale[kind] times its table figure.

    Block artifacts each pay a call overhead a whole model pays once, and a whole graph fuses
    across block borders; both are fitted on whole models measured next to the blocks. Some
    kinds may lose more at their borders than others: a lone ExecuTorch conv block converts its
    input to channels-last and back, which a chain of convs inside a model does once, so conv
    blocks get their own fitted factor. (On the 2-core dev host that factor came out 1.13: the
    1.3-1.7x by which ExecuTorch waveform models' blocks over-sum lies in the 50 Hz encoder
    blocks instead, and is not modelled; docs/benchmarks.md.)
    """

    scale: float = 1.0
    per_block_ms: float = 0.0
    fitted_on: tuple[dict, ...] = ()
    kind_scale: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fitted_on", tuple(self.fitted_on))
        object.__setattr__(self, "kind_scale", dict(self.kind_scale))
        if not (_num(self.scale) and self.scale > 0):
            raise ValueError(f"correction.scale={self.scale!r} must be a positive number")
        if not _num(self.per_block_ms):
            raise ValueError(f"correction.per_block_ms={self.per_block_ms!r} must be a number")
        for kind, v in self.kind_scale.items():
            if not (isinstance(kind, str) and _num(v) and v > 0):
                raise ValueError(f"correction.kind_scale[{kind!r}]={v!r} must be a positive number")

    def block_factor(self, kind: str) -> float:
        return self.kind_scale.get(kind, 1.0)

    def apply(self, sum_ms: float, n_blocks: int) -> float:
        return max(self.scale * sum_ms + self.per_block_ms * n_blocks, 1e-6)


@dataclass(frozen=True)
class Provenance:
    device: str
    backend: str
    dtype: str
    threads: int
    method: str  # measured | estimated
    date: str  # ISO 8601
    affinity: tuple[int, ...] = ()
    runtime_versions: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)  # model, governor, clocks when readable
    space: str = ""
    seconds: tuple[float, ...] = ()
    warmup: int = 0
    runs: int = 0
    derivation: dict | None = None  # for estimated tables: the device model and its figures
    notes: str = ""
    # Speed probe (edgekit.latency.measure): the block timed before every timing pass, and its
    # median over the profile; every entry was rescaled to that speed.
    speed_probe: dict | None = None
    # edgekit.export.REWRITES_REVISION the blocks were lowered under (0: before it was recorded).
    export_rewrites: int = 0
    # Blocks timed again because they disagreed with the rest of their group (profile.py,
    # recheck_outliers): the threshold and, per block, every median taken and the one kept.
    rechecked: dict | None = None
    # Anchor models timed again next to every validation to measure how far the machine's
    # speed has moved since the profile (speed.py, pick_speed_references): seconds, and per
    # model its name, ArchSpec JSON and median at the table's speed.
    speed_reference: dict | None = None
    # How the profile that wrote the table ran (profile.py, build_table): wall seconds per
    # phase, and how many blocks and anchors it measured against how many the journal held.
    build: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "affinity", tuple(self.affinity))
        object.__setattr__(self, "seconds", tuple(self.seconds))
        if not self.device:
            raise ValueError("provenance.device is empty")
        if self.backend not in BACKENDS:
            raise ValueError(f"provenance.backend={self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"provenance.dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if self.method not in METHODS:
            raise ValueError(f"provenance.method={self.method!r}: expected one of {', '.join(METHODS)}")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ValueError(f"provenance.threads={self.threads!r}: expected an integer >= 1")
        if self.speed_reference is not None:
            _check_speed_reference(self.speed_reference)
        if self.build is not None:
            _check_build(self.build)
        if self.method == "estimated" and not self.derivation:
            raise ValueError("provenance.derivation is missing: an estimated table must record the "
                             "figures it was derived from")

    @property
    def estimated(self) -> bool:
        return self.method == "estimated"

    def describe(self) -> str:
        """One line for command output; says loudly when the figures are estimates."""
        what = "ESTIMATED (not measured on the device)" if self.estimated else "measured"
        return (f"{what} table for {self.device}, {self.backend} {self.dtype}, {self.threads} thread(s), "
                f"{self.date[:10]}")


def _check_speed_reference(ref: Any) -> None:
    where = "provenance.speed_reference"
    if not isinstance(ref, dict) or set(ref) != {"seconds", "models"}:
        raise ValueError(f"{where} must be an object with exactly seconds and models")
    if not (_num(ref["seconds"]) and ref["seconds"] > 0):
        raise ValueError(f"{where}.seconds={ref['seconds']!r} must be a positive number")
    models = ref["models"]
    if not isinstance(models, list) or not models:
        raise ValueError(f"{where}.models must be a non-empty list")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or set(m) != {"name", "measured_ms", "arch"}:
            raise ValueError(f"{where}.models[{i}] must have exactly name, measured_ms and arch")
        if not (_num(m["measured_ms"]) and m["measured_ms"] > 0):
            raise ValueError(f"{where}.models[{i}].measured_ms={m['measured_ms']!r} must be a positive number")
        try:
            ArchSpec.from_dict(m["arch"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}.models[{i}].arch: {e}") from None


BUILD_PHASES = ("blocks", "rechecking", "anchors", "total")


def _check_build(build: Any) -> None:
    where = "provenance.build"
    if not isinstance(build, dict) or set(build) != {"seconds", "measured", "from_journal"}:
        raise ValueError(f"{where} must be an object with exactly seconds, measured and from_journal")
    secs = build["seconds"]
    if not isinstance(secs, dict) or set(secs) != set(BUILD_PHASES):
        raise ValueError(f"{where}.seconds must have exactly {', '.join(BUILD_PHASES)}")
    for k, v in secs.items():
        if not (_num(v) and v >= 0):
            raise ValueError(f"{where}.seconds.{k}={v!r} must be a number >= 0")
    for k in ("measured", "from_journal"):
        if not (isinstance(build[k], int) and not isinstance(build[k], bool) and build[k] >= 0):
            raise ValueError(f"{where}.{k}={build[k]!r} must be an integer >= 0")


@dataclass(frozen=True)
class LatencyTable:
    provenance: Provenance
    entries: dict[str, Entry]
    correction: Correction = field(default_factory=Correction)
    validation: dict | None = None  # held-out accuracy when measured (`profile --validate`)
    path: str = ""  # where it was loaded from; not serialised

    def to_dict(self) -> dict[str, Any]:
        prov = dataclasses.asdict(self.provenance)
        prov["affinity"], prov["seconds"] = list(self.provenance.affinity), list(self.provenance.seconds)
        return {"schema": SCHEMA, "provenance": prov,
                "correction": {"scale": self.correction.scale, "per_block_ms": self.correction.per_block_ms,
                               "kind_scale": dict(self.correction.kind_scale),
                               "fitted_on": list(self.correction.fitted_on)},
                "validation": self.validation,
                "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)}}

    def matches(self, backend: str | None = None, dtype: str | None = None, device: str | None = None) -> None:
        """Refuse a table made for another backend, dtype or device, with the reason."""
        p = self.provenance
        where = self.path or "table"
        for name, want, have in (("backend", backend, p.backend), ("dtype", dtype, p.dtype),
                                 ("device", device, p.device)):
            if want is not None and want != have:
                raise UserError(f"{where} is a {have} table ({name}), but {name} {want} was asked for; "
                                f"use a table measured for {want} or profile one with `edgekit profile`")


# --------------------------------------------------------------------------- parse / write


def table_from_dict(data: Any, where: str = "table") -> LatencyTable:
    if not isinstance(data, dict):
        raise _bad(where, f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise _bad(where, f"schema {schema!r} is not supported; expected {SCHEMA!r} (re-run `edgekit profile`)")
    unknown = sorted(set(data) - {"schema", "provenance", "correction", "validation", "entries"})
    if unknown:
        raise _bad(where, f"unknown top-level key(s) {', '.join(unknown)}")
    prov_raw = data.get("provenance")
    if not isinstance(prov_raw, dict):
        raise _bad(where, "provenance is missing or not an object")
    names = {f.name for f in dataclasses.fields(Provenance)}
    extra = sorted(set(prov_raw) - names)
    if extra:
        raise _bad(where, f"unknown provenance key(s) {', '.join(extra)}")
    missing = sorted({"device", "backend", "dtype", "threads", "method", "date"} - set(prov_raw))
    if missing:
        raise _bad(where, f"provenance lacks {', '.join(missing)}")
    try:
        prov = Provenance(**prov_raw)
    except (TypeError, ValueError) as e:
        raise _bad(where, str(e)) from None
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, dict) or not entries_raw:
        raise _bad(where, "entries is missing, empty or not an object")
    entries: dict[str, Entry] = {}
    for key, value in entries_raw.items():
        try:
            parse_key(key)
            if not isinstance(value, dict) or set(value) != {"median_ms", "p10_ms", "p90_ms", "n"}:
                raise ValueError("expected exactly median_ms, p10_ms, p90_ms, n")
            entries[key] = Entry(**value)
        except (TypeError, ValueError) as e:
            raise _bad(where, f"entry {key!r}: {e}") from None
    corr_raw = data.get("correction") or {}
    if not isinstance(corr_raw, dict) or set(corr_raw) - {"scale", "per_block_ms", "fitted_on", "kind_scale"}:
        raise _bad(where, "correction must be an object with scale, per_block_ms, fitted_on and optionally "
                          "kind_scale")
    if not isinstance(corr_raw.get("kind_scale", {}), dict):
        raise _bad(where, "correction.kind_scale must be an object of block kind -> factor")
    try:
        corr = Correction(**corr_raw)
    except (TypeError, ValueError) as e:
        raise _bad(where, str(e)) from None
    validation = data.get("validation")
    if validation is not None and not isinstance(validation, dict):
        raise _bad(where, "validation must be an object or null")
    return LatencyTable(prov, entries, corr, validation, path=where)


def load_table(path: str | os.PathLike, backend: str | None = None, dtype: str | None = None,
               device: str | None = None) -> LatencyTable:
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UserError(f"latency table {path} does not exist; write one with `edgekit profile -o {path}`") from None
    except OSError as e:
        raise UserError(f"cannot read latency table {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None
    table = table_from_dict(data, path)
    table.matches(backend=backend, dtype=dtype, device=device)
    return table


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temp file in the same directory, then os.replace: readers never see
    half a file, and an interrupted write leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_table(table: LatencyTable, path: str | os.PathLike) -> None:
    write_json_atomic(path, table.to_dict())


# --------------------------------------------------------------------------- where tables live


def user_tables_dir() -> Path:
    return data_dir() / "tables"


def shipped_tables_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "tables"


def table_filename(device: str, backend: str, dtype: str) -> str:
    return f"{device}-{backend}-{dtype}.json"


def user_table_path(device: str, backend: str, dtype: str) -> Path:
    return user_tables_dir() / table_filename(device, backend, dtype)


@dataclass(frozen=True)
class TableInfo:
    path: str
    provenance: Provenance
    entries: int


def find_tables(device: str | None = None, backend: str | None = None, dtype: str | None = None) -> list[TableInfo]:
    """Every readable table (user dir, then shipped), best first: measured before estimated,
    then newest. Unreadable files in the user dir are skipped here (load_table on them says
    why); a broken shipped table is a bug and raises."""
    found: list[TableInfo] = []
    for root, shipped in ((user_tables_dir(), False), (shipped_tables_dir(), True)):
        if not root.is_dir():
            continue
        for p in sorted(root.glob("*.json")):
            try:
                t = load_table(p)
            except UserError:
                if shipped:
                    raise
                continue
            pv = t.provenance
            if (device and pv.device != device) or (backend and pv.backend != backend) or \
                    (dtype and pv.dtype != dtype):
                continue
            found.append(TableInfo(str(p), pv, len(t.entries)))
    found.sort(key=lambda i: (i.provenance.method != "measured", _neg_date(i.provenance.date)))
    return found


def _neg_date(date: str) -> tuple:
    return tuple(-ord(c) for c in date)


def best_table(device: str, backend: str, dtype: str) -> LatencyTable:
    found = find_tables(device, backend, dtype)
    if not found:
        others = find_tables(device)
        have = ", ".join(sorted({f"{i.provenance.backend} {i.provenance.dtype}" for i in others})) or "none"
        raise UserError(f"no latency table for {device} {backend} {dtype} (tables for {device}: {have}); "
                        f"measure one with `edgekit profile --device {device} --backend {backend} --dtype {dtype}` "
                        "or pass --table FILE")
    return load_table(found[0].path, backend=backend, dtype=dtype, device=device)
