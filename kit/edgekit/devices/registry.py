"""Device registry: the built-in targets (host, pixel7, pixel8, rpi4, rpi5) and user devices.

A Device carries what profiling and the device model need: how it is reached (local, ssh,
adb), its cores and default threads and affinity, its default backend, and the hardware facts
an estimated latency table is derived from (clusters of cores with clock and SIMD throughput,
memory bandwidth). Facts for the phones and Pis come from shared/reference/devices.md and the
Arm core documentation; they are assumptions of the device model and are recorded in every
table derived from them.

Users add devices without editing code: one TOML or JSON file per device in
$EDGEKIT_CONFIG_DIR/devices/ (default ~/.config/edgekit/devices/), same fields as Device.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import config_dir
from ..errors import FormatError, UserError

CONNECTIONS = ("local", "ssh", "adb")
BACKENDS = ("executorch", "onnx", "tflite")


@dataclass(frozen=True)
class CoreCluster:
    """`count` identical cores at `ghz`, with fp32 FLOPs per cycle per core (SIMD lanes x FMA
    pipes x 2) and int8 ops per cycle per core (dot-product instructions give 4x fp32)."""

    count: int
    core: str
    ghz: float
    fp32_flops_per_cycle: float
    int8_ops_per_cycle: float

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count > 0):
            raise ValueError(f"cluster.count={self.count!r} is invalid: expected a positive integer")
        for name in ("ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"cluster.{name}={v!r} is invalid: expected a positive number")


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    connection: str  # local | ssh | adb
    clusters: tuple[CoreCluster, ...]
    default_threads: int
    affinity: tuple[int, ...] = ()  # core ids benchmark threads are pinned to; () = any
    default_backend: str = "onnx"
    mem_bandwidth_gbs: float = 10.0  # sustained CPU read bandwidth (STREAM-like), not the bus peak
    address: str = ""  # ssh host or adb serial; unused for local
    source: str = "built-in"  # built-in | path of the user file

    def __post_init__(self) -> None:
        object.__setattr__(self, "clusters", tuple(self.clusters))
        object.__setattr__(self, "affinity", tuple(self.affinity))
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", self.name or ""):
            raise ValueError(f"device name {self.name!r} is invalid: expected lower-case letters, digits, '-', '_', '.'")
        if self.connection not in CONNECTIONS:
            raise ValueError(f"device {self.name}: connection={self.connection!r} is invalid: "
                             f"expected one of {', '.join(CONNECTIONS)}")
        if self.default_backend not in BACKENDS:
            raise ValueError(f"device {self.name}: default_backend={self.default_backend!r} is invalid: "
                             f"expected one of {', '.join(BACKENDS)}")
        if not self.clusters:
            raise ValueError(f"device {self.name}: needs at least one core cluster")
        for c in self.clusters:
            if not isinstance(c, CoreCluster):
                raise ValueError(f"device {self.name}: clusters must be CoreCluster items")
        if not (isinstance(self.default_threads, int) and 0 < self.default_threads <= self.cores):
            raise ValueError(f"device {self.name}: default_threads={self.default_threads!r} is invalid: "
                             f"expected 1..{self.cores}")
        if any((not isinstance(a, int)) or a < 0 or a >= self.cores for a in self.affinity):
            raise ValueError(f"device {self.name}: affinity={list(self.affinity)} is invalid: "
                             f"expected core ids in 0..{self.cores - 1}")
        if not (isinstance(self.mem_bandwidth_gbs, (int, float)) and self.mem_bandwidth_gbs > 0):
            raise ValueError(f"device {self.name}: mem_bandwidth_gbs must be a positive number")

    @property
    def cores(self) -> int:
        return sum(c.count for c in self.clusters)

    @property
    def measurable_here(self) -> bool:
        return self.connection == "local"

    def fastest_cores(self, threads: int) -> list[CoreCluster]:
        """The `threads` fastest cores, one CoreCluster(count=1) each: benchmark threads are
        pinned to the big cores, so these are the cores a measurement runs on."""
        ranked = sorted(self.clusters, key=lambda c: -c.ghz * c.fp32_flops_per_cycle)
        out: list[CoreCluster] = []
        for c in ranked:
            for _ in range(c.count):
                if len(out) < threads:
                    out.append(dataclasses.replace(c, count=1))
        return out

    def peak_gflops(self, threads: int, dtype: str = "fp32") -> float:
        """Nominal peak of the `threads` fastest cores, GFLOP/s (fp32) or GOP/s (int8)."""
        key = "fp32_flops_per_cycle" if dtype == "fp32" else "int8_ops_per_cycle"
        return sum(c.ghz * getattr(c, key) for c in self.fastest_cores(threads))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cores"] = self.cores
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "Device":
        if not isinstance(data, dict):
            raise FormatError(f"{source}: a device file must hold one object/table, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k != "cores"}
        allowed = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise FormatError(f"{source}: unknown device field(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(allowed))}")
        try:
            clusters = tuple(CoreCluster(**c) for c in data.pop("clusters", ()))
            return cls(clusters=clusters, source=source, **data)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{source}: {' '.join(str(e).split())}") from None


# --------------------------------------------------------------------------- built-ins

# FLOPs per cycle: Cortex-A72/A76/A78/A715 have two 128-bit NEON FMA pipes (2 x 4 lanes x 2 =
# 16), Cortex-X1/X3 four (32), A55/A510 one effective 128-bit pipe (8). int8: Armv8.2 dot
# product (SDOT) gives 4x the fp32 rate; the A72 (Armv8.0) has no SDOT and widens with
# SMLAL, about 2x.
_A55 = dict(core="Cortex-A55", fp32_flops_per_cycle=8, int8_ops_per_cycle=32)


def _builtin_devices() -> list[Device]:
    return [
        host_device(),
        Device("pixel7", "Google Pixel 7 (Tensor G2), Android", "adb",
               (CoreCluster(2, "Cortex-X1", 2.85, 32, 128), CoreCluster(2, "Cortex-A78", 2.35, 16, 64),
                CoreCluster(4, ghz=1.8, **_A55)),
               default_threads=4, affinity=(4, 5, 6, 7), default_backend="executorch",
               mem_bandwidth_gbs=20.0),
        Device("pixel8", "Google Pixel 8 (Tensor G3), Android", "adb",
               (CoreCluster(1, "Cortex-X3", 2.91, 32, 128), CoreCluster(4, "Cortex-A715", 2.37, 16, 64),
                CoreCluster(4, "Cortex-A510", 1.7, 8, 32)),
               default_threads=4, affinity=(5, 6, 7, 8), default_backend="executorch",
               mem_bandwidth_gbs=25.0),
        Device("rpi5", "Raspberry Pi 5 (4x Cortex-A76 2.4 GHz), 64-bit Raspberry Pi OS", "ssh",
               (CoreCluster(4, "Cortex-A76", 2.4, 16, 64),),
               default_threads=4, affinity=(0, 1, 2, 3), default_backend="onnx", mem_bandwidth_gbs=10.0),
        Device("rpi4", "Raspberry Pi 4 B (4x Cortex-A72 1.5 GHz), 64-bit Raspberry Pi OS", "ssh",
               (CoreCluster(4, "Cortex-A72", 1.5, 16, 32),),
               default_threads=4, affinity=(0, 1, 2, 3), default_backend="onnx", mem_bandwidth_gbs=4.0),
    ]


# CPU flags of int8 dot-product instructions (x86 VNNI, Arm dotprod): with them int8 GEMMs run
# about 4x fp32 per cycle, without them about 2x.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})


def read_cpuinfo() -> tuple[str, set[str], float]:
    """(model name, flags, MHz) from /proc/cpuinfo; empty where unreadable (macOS, containers)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), 0.0
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags, mhz
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "cpu MHz" and not mhz:
            try:
                mhz = float(value)
            except ValueError:
                pass
    return model, flags, mhz


def host_device() -> Device:
    """This machine. The SIMD width comes from the CPU flags; the clock from cpufreq or
    /proc/cpuinfo. These nominal figures only document the host; host tables are measured."""
    model, flags, mhz = read_cpuinfo()
    affinity = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    cores = len(affinity) or os.cpu_count() or 1
    if "avx512f" in flags:
        lanes, pipes = 16, 2
    elif "avx2" in flags or "fma" in flags:
        lanes, pipes = 8, 2
    else:  # NEON or unknown: assume one 128-bit FMA pipe pair
        lanes, pipes = 4, 2
    fp32 = lanes * pipes * 2
    int8 = fp32 * (4 if flags & INT8_DOT_FLAGS else 2)
    ghz = (mhz or 2000.0) / 1000.0
    simd = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "128-bit SIMD"
    return Device("host", f"this machine: {model}, {cores} cores, {simd}", "local",
                  (CoreCluster(cores, model, round(ghz, 3), fp32, int8),),
                  # Affinity () = whatever this process may use; profile records the real set.
                  default_threads=cores, affinity=(), default_backend="executorch", mem_bandwidth_gbs=20.0)


# --------------------------------------------------------------------------- user devices


def user_device_dir() -> Path:
    return config_dir() / "devices"


def load_device_file(path: Path) -> Device:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read device file {path}: {e.strerror}") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib

            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise FormatError(f"{path}: not valid {kind}: {' '.join(str(e).split())}") from None
    dev = Device.from_dict(data, str(path))
    if dev.name != path.stem:
        raise FormatError(f"{path}: device name {dev.name!r} does not match the file name; "
                          f"rename the file to {dev.name}{path.suffix} or fix the name")
    return dev


def user_devices() -> list[Device]:
    d = user_device_dir()
    if not d.is_dir():
        return []
    return [load_device_file(p) for p in sorted(d.iterdir()) if p.suffix in (".toml", ".json")]


class UnknownDeviceError(UserError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown device {name!r}; known devices: {', '.join(known)} "
                         f"(add one as a TOML/JSON file in {user_device_dir()})")


def list_devices() -> list[Device]:
    """Built-ins first, then user devices; a user file may override a built-in of the same
    name except `host`, which is always this machine."""
    devices = {d.name: d for d in _builtin_devices()}
    for d in user_devices():
        if d.name == "host":
            raise FormatError(f"{d.source}: 'host' is reserved for this machine; choose another name")
        devices[d.name] = d
    return list(devices.values())


def get_device(name: str) -> Device:
    devices = list_devices()
    for d in devices:
        if d.name == name:
            return d
    raise UnknownDeviceError(name, [d.name for d in devices])
