"""Device-side benchmark entry point: time one artifact and print one JSON object.

    python -m edgekit_runtime.device_main ARTIFACT [--runs N] [--warmup N] [--threads N]
        [--cpus 0-3] [--expect-sha256 HEX]

This is what a Raspberry Pi runs: edgekit.devices.ssh copies this package (standard library,
numpy and the artifact's runtime only; nothing else of edgekit) under the name
`edgekit_runtime` and starts this module. It also runs in place as
`python -m edgekit.runtime.device_main`.

Output, one line on stdout: {"ok": true, "protocol": 1, ...stats, load time, peak RSS, threads,
affinity, raw cpufreq values before and after the run, system facts, runtime versions} or
{"ok": false, "kind": ..., "error": one line}. The exit status is 0 on success, 3 on a
reported error. Raw cpufreq values are interpreted on the host (edgekit.devices.sysinfo), so
the device side stays small and stable.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import time

from . import runners

PROTOCOL = 1
ERROR_EXIT = 3
SYSFS_CPU = "/sys/devices/system/cpu"
# Must equal edgekit.devices.sysinfo.CPUFREQ_FILES (a test checks it).
CPUFREQ_FILES = ("scaling_governor", "scaling_cur_freq", "scaling_max_freq", "scaling_min_freq",
                 "cpuinfo_max_freq")
_VERSION_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert", "executorch", "torch")


class _Failure(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if not m:
            raise ValueError(f"CPU list {text!r}: expected ranges such as 0-3,6")
        out.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(set(out))


def raw_cpufreq(cpus: list[int], root: str = SYSFS_CPU) -> dict[str, str]:
    """{"<cpu>/<file>": raw value} for the cpufreq files that exist (none in most VMs)."""
    out: dict[str, str] = {}
    for cpu in cpus:
        for name in CPUFREQ_FILES:
            value = _read(os.path.join(root, f"cpu{cpu}", "cpufreq", name))
            if value is not None:
                out[f"{cpu}/{name}"] = value
    return out


# Whether int8 GEMMs have dot-product instructions (Pi 5's A76: yes, Pi 4's A72: no) decides
# what int8 buys on the device. The same set as devices.registry.INT8_DOT_FLAGS (a test keeps
# them equal), spelled again because this file runs on the device without the rest of edgekit.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})


def system_facts() -> dict:
    """Identity of the machine: hostname, CPU model, kernel, OS, temperature."""
    facts: dict = {"hostname": platform.node(), "machine": platform.machine(), "kernel": platform.release(),
                   "python": platform.python_version(), "cpu_count": os.cpu_count()}
    model = _read("/proc/device-tree/model")  # "Raspberry Pi 5 Model B Rev 1.0"
    if model:
        facts["board"] = model.rstrip("\x00")
    cpuinfo = _read("/proc/cpuinfo") or ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model") and value.strip() and "cpu_model" not in facts:
            facts["cpu_model"] = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    facts["int8_dot_product"] = sorted(flags & INT8_DOT_FLAGS)
    for line in (_read("/etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            facts["os"] = line.split("=", 1)[1].strip().strip('"')
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    if temp and temp.lstrip("-").isdigit():
        facts["temperature_c"] = int(temp) / 1000
    return facts


def package_versions(packages) -> dict[str, str]:
    """Python's version and each installed package's; packages that are absent are left out."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def runtime_versions() -> dict[str, str]:
    return package_versions(_VERSION_PACKAGES)


def sha256_file(path: str | os.PathLike) -> str:
    """Streamed sha256 of a file (the host checks the same digest against manifest.json)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pin(cpus: list[int] | None) -> list[int]:
    """Pin this process before the runtime starts its threads (they inherit the mask)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    if cpus:
        available = os.sched_getaffinity(0)
        missing = sorted(set(cpus) - available)
        if missing:
            raise _Failure("usage", f"--cpus asks for CPU(s) {missing}, which this device does not offer; "
                                    f"available: {sorted(available)}")
        os.sched_setaffinity(0, set(cpus))
    return sorted(os.sched_getaffinity(0))


def measure(artifact: str, runs: int, warmup: int, threads: int | None, cpus: list[int] | None,
            expect_sha256: str | None) -> dict:
    if not os.path.isfile(artifact):
        raise _Failure("bad_artifact", f"{artifact}: no such artifact file on the device")
    digest = sha256_file(artifact)
    if expect_sha256 and digest != expect_sha256.lower():
        raise _Failure("hash_mismatch", f"{artifact}: sha256 {digest[:12]}… on the device, expected "
                                        f"{expect_sha256[:12]}… from the manifest; copy the artifact again")
    # Pin before load(): the runtime (onnxruntime, LiteRT, ExecuTorch) is imported and starts
    # its thread pool inside load(), and those threads inherit this mask.
    affinity = _pin(cpus)
    before = raw_cpufreq(affinity or list(range(os.cpu_count() or 1)))
    try:
        runner = runners.load(artifact, threads=threads)
        stats = runner.time(warmup=warmup, runs=runs, threads=threads)
    except runners.MissingRuntimeError as e:
        raise _Failure("missing_runtime", str(e)) from None
    except runners.RuntimeLoadError as e:
        raise _Failure("bad_artifact", str(e)) from None
    after = raw_cpufreq(affinity or list(range(os.cpu_count() or 1)))
    return {"ok": True, "protocol": PROTOCOL, "artifact": os.path.basename(artifact), "sha256": digest,
            "format": runner.format, "input_shape": list(runner.input_shape), "stats": stats.to_dict(),
            "threads": threads, "affinity_requested": cpus or [], "affinity": affinity,
            "cpufreq_before": before, "cpufreq_after": after, "system": system_facts(),
            "runtime_versions": runtime_versions(), "finished_at": time.time()}


def describe(cpus: list[int] | None) -> dict:
    """The device facts alone: what a latency table's provenance records."""
    affinity = _pin(cpus)
    return {"ok": True, "protocol": PROTOCOL, "affinity": affinity,
            "cpufreq": raw_cpufreq(affinity or list(range(os.cpu_count() or 1))), "system": system_facts(),
            "runtime_versions": runtime_versions()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="device_main", description="Time one edgekit artifact; print one JSON line.")
    p.add_argument("artifact", nargs="?", help="the artifact to time (omit with --describe)")
    p.add_argument("--describe", action="store_true",
                   help="print only the device facts (system, cpufreq, affinity, versions)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpus", default=None, help="CPU list to pin to, e.g. 0-3")
    p.add_argument("--expect-sha256", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.runs < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
            raise _Failure("usage", f"runs={args.runs}, warmup={args.warmup}, threads={args.threads}: "
                                    "expected runs >= 1, warmup >= 0, threads >= 1")
        try:
            cpus = _cpu_list(args.cpus) if args.cpus else None
        except ValueError as e:
            raise _Failure("usage", str(e)) from None
        if args.describe:
            result = describe(cpus)
        elif not args.artifact:
            raise _Failure("usage", "no artifact given; pass the artifact path or --describe")
        else:
            result = measure(args.artifact, args.runs, args.warmup, args.threads, cpus, args.expect_sha256)
    except _Failure as e:
        print(json.dumps({"ok": False, "protocol": PROTOCOL, "kind": e.kind, "error": " ".join(str(e).split())}))
        return ERROR_EXIT
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
