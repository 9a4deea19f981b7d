"""How edgekit reaches a device to time an artifact.

A Connection times one artifact file on its device and reports the run environment (CPU
governor and clock, affinity, runtime versions) that goes into a table's provenance. Only the
local connection exists here; SSH (Raspberry Pi) and adb (Android) connections implement the
same two methods and are registered in `_CONNECTORS` by the runner.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Callable, Protocol

from ..runtime.device_main import package_versions
from ..errors import UserError
from .registry import Device

RUNTIME_PACKAGES = ("torch", "executorch", "onnxruntime", "ai-edge-litert", "litert-torch", "numpy")


class Connection(Protocol):
    device: Device

    def time_artifact(self, path: str, warmup: int, runs: int, threads: int) -> Any:
        """Time `path` on the device; returns the runtime's TimingStats (median, p10, p90, n)."""

    def environment(self) -> dict[str, Any]:
        """Governor, clocks, affinity and runtime versions as they are now on the device."""

    # Optional: time_artifact_paired(path, probe_path, warmup, runs, threads) -> PairedTiming,
    # the artifact timed with a speed probe in between. RuntimeMeasure uses it when present;
    # the SSH and adb connections do not have it yet and are timed with a probe per pass.


def runtime_versions() -> dict[str, str]:
    return package_versions(RUNTIME_PACKAGES)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_state(cpus: list[int]) -> dict[str, Any]:
    """Governor and current/max clock per CPU when cpufreq is readable (it is not in most
    containers and VMs: then the /proc/cpuinfo clock is reported and marked as such)."""
    governors, cur, mx = {}, {}, {}
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/cpufreq")
        g = _read(base / "scaling_governor")
        if g is not None:
            governors[str(c)] = g
        f = _read(base / "scaling_cur_freq")
        if f is not None and f.isdigit():
            cur[str(c)] = int(f) // 1000
        m = _read(base / "cpuinfo_max_freq")
        if m is not None and m.isdigit():
            mx[str(c)] = int(m) // 1000
    out: dict[str, Any] = {"governor": governors or None, "cur_mhz": cur or None, "max_mhz": mx or None}
    if not cur:
        from .registry import read_cpuinfo

        mhz = read_cpuinfo()[2]
        out["cpuinfo_mhz"] = mhz or None
    return out


class LocalConnection:
    """This machine: artifacts are timed in-process with edgekit.runtime."""

    def __init__(self, device: Device):
        self.device = device

    def time_artifact(self, path: str, warmup: int, runs: int, threads: int) -> Any:
        from .. import runtime

        return runtime.load(path).time(warmup=warmup, runs=runs, threads=threads)

    def time_artifact_paired(self, path: str, probe_path: str, warmup: int, runs: int, threads: int) -> Any:
        """Time `path` with the probe artifact timed in between (Runner.time_against);
        returns a runtime PairedTiming. Both run in this process, one after the other."""
        from .. import runtime

        target = runtime.load(path, threads=threads, allow_spinning=False)
        probe = runtime.load(probe_path, threads=threads, allow_spinning=False)
        return target.time_against(probe, warmup=warmup, runs=runs)

    def environment(self) -> dict[str, Any]:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        from .registry import INT8_DOT_FLAGS, read_cpuinfo

        model, flags, _mhz = read_cpuinfo()
        # int8 tables depend on the dot-product instructions more than on the clock.
        return {"hostname": platform.node(), "cpu_model": model, "machine": platform.machine(),
                "int8_dot_product": sorted(flags & INT8_DOT_FLAGS), "affinity": cpus, **cpu_state(cpus),
                "runtime_versions": runtime_versions()}


def _ssh(device: Device, **options: Any) -> Connection:
    from .ssh import connect_ssh  # imported on use: plain local work never needs it

    return connect_ssh(device, **options)


def _adb(device: Device, **options: Any) -> Connection:
    from .android import connect_android

    return connect_android(device, **options)


_CONNECTORS: dict[str, Callable[..., Connection]] = {"local": LocalConnection, "ssh": _ssh, "adb": _adb}


def connect(device: Device, **options: Any) -> Connection:
    """A Connection to `device`. Options reach the ssh/adb connectors (host, port, identity,
    serial, tool; None values are dropped) and are ignored for the local one."""
    factory = _CONNECTORS.get(device.connection)
    if factory is None:
        raise UserError(f"device {device.name} is reached over {device.connection}, and this edgekit has no "
                        f"{device.connection} runner yet; run `edgekit profile --device host` on the device "
                        "itself and copy the table, or use its estimated table")
    options = {k: v for k, v in options.items() if v is not None}
    if device.connection == "local" or not options:
        return factory(device)
    return factory(device, **options)


def pin_affinity(cores: tuple[int, ...] | list[int]) -> list[int]:
    """Pin this process (and the runtime threads it starts) to `cores`; returns the set in force."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    if cores:
        available = os.sched_getaffinity(0)
        bad = sorted(set(cores) - available)
        if bad:
            raise UserError(f"--affinity {','.join(map(str, cores))}: core(s) {bad} are not available here; "
                            f"available: {','.join(map(str, sorted(available)))}")
        os.sched_setaffinity(0, set(cores))
    return sorted(os.sched_getaffinity(0))
