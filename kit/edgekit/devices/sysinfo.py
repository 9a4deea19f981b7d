"""What the CPU was doing during a measurement: governor, clocks, affinity, device identity.

Standard library only. The devices report raw cpufreq values and this module interprets
them, so one parser serves every path:
- a Raspberry Pi runs `edgekit.runtime.device_main`, which reads the cpufreq files and reports
  them raw as {"<cpu>/<file>": value} (`cpu_state_from_raw`);
- an Android phone: one `adb shell` call runs ANDROID_CPU_DUMP, which prints
  `<cpu>\t<file>\t<value>` lines (`parse_cpu_dump`);
- this machine: `read_cpu_state` reads sysfs directly.
All three give the same {governor, cur_mhz, max_mhz, min_mhz, hw_max_mhz} maps keyed by CPU id.

`conditions_warnings` compares the state before and after a run and names what makes a
measurement untrustworthy (a governor other than performance/schedutil at a pinned clock, a
clock that dropped during the run, i.e. thermal throttling), following ExecuTorch's finding
that unpinned phone benchmarks are noise.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping

SYSFS_CPU = "/sys/devices/system/cpu"

# Each line: "<cpu id>\t<file name>\t<value>". Files that do not exist (no cpufreq in a VM)
# are simply missing from the output; `cat` errors go to /dev/null. Bounded: one pass, no loop
# on the device beyond the CPU directories.
ANDROID_CPU_DUMP = (
    "for d in /sys/devices/system/cpu/cpu[0-9]*; do c=${d##*cpu}; "
    "for f in scaling_governor scaling_cur_freq scaling_max_freq scaling_min_freq cpuinfo_max_freq; do "
    "v=$(cat $d/cpufreq/$f 2>/dev/null) && echo \"$c\t$f\t$v\"; done; done; "
    "echo \"online\t-\t$(cat /sys/devices/system/cpu/online 2>/dev/null)\""
)

_FILE_KEYS = {
    "scaling_governor": "governor",
    "scaling_cur_freq": "cur_mhz",
    "scaling_max_freq": "max_mhz",
    "scaling_min_freq": "min_mhz",
    "cpuinfo_max_freq": "hw_max_mhz",
}


def parse_cpu_list(text: str) -> list[int]:
    """Kernel CPU list syntax ('0-3,6') -> [0, 1, 2, 3, 6]."""
    out: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"CPU list {text!r}: expected ranges such as 0-3,6")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"CPU list {text!r}: range {part} runs backwards")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """[0, 1, 2, 3, 6] -> '0-3,6' (the inverse of parse_cpu_list)."""
    cpus = sorted(set(int(c) for c in cpus))
    parts, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


def taskset_mask(cpus: Iterable[int]) -> str:
    """CPU ids -> the hexadecimal mask `taskset` takes ([4, 5, 6, 7] -> 'f0')."""
    cpus = sorted(set(int(c) for c in cpus))
    if not cpus or cpus[0] < 0:
        raise ValueError(f"taskset mask needs at least one non-negative CPU id, got {cpus}")
    mask = 0
    for c in cpus:
        mask |= 1 << c
    return format(mask, "x")


def cpu_state_from_files(files: Mapping[tuple[int, str], str]) -> dict:
    """{(cpu, cpufreq file name): raw value} -> {governor: {cpu: str}, cur_mhz: {cpu: int}, ...}.

    Frequencies in sysfs are kHz; they are reported in MHz. CPU ids become string keys so the
    result survives a JSON round trip unchanged.
    """
    out: dict[str, dict[str, object]] = {key: {} for key in _FILE_KEYS.values()}
    for (cpu, name), raw in sorted(files.items()):
        key = _FILE_KEYS.get(name)
        if key is None:
            continue
        raw = raw.strip()
        if key == "governor":
            if raw:
                out[key][str(cpu)] = raw
        elif raw.isdigit():
            out[key][str(cpu)] = int(raw) // 1000
    return {k: v for k, v in out.items() if v}


def cpu_state_from_raw(raw: Mapping[str, str]) -> dict:
    """device_main's {"<cpu>/<cpufreq file>": value} -> the cpu state dictionary."""
    files: dict[tuple[int, str], str] = {}
    for key, value in raw.items():
        cpu, _, name = str(key).partition("/")
        if cpu.isdigit() and name in _FILE_KEYS and isinstance(value, str):
            files[(int(cpu), name)] = value
    return cpu_state_from_files(files)


CPUFREQ_FILES = tuple(_FILE_KEYS)


def read_cpu_state(cpus: Iterable[int] | None = None, root: str = SYSFS_CPU,
                   read: Callable[[str], str | None] | None = None) -> dict:
    """Read governor and clocks of `cpus` (default: the online CPUs) from sysfs under `root`."""
    read = read or _read_file
    if cpus is None:
        online = read(os.path.join(root, "online"))
        cpus = parse_cpu_list(online) if online else []
    files: dict[tuple[int, str], str] = {}
    for cpu in cpus:
        for name in _FILE_KEYS:
            value = read(os.path.join(root, f"cpu{cpu}", "cpufreq", name))
            if value is not None:
                files[(int(cpu), name)] = value
    return cpu_state_from_files(files)


def parse_cpu_dump(text: str) -> dict:
    """Output of ANDROID_CPU_DUMP -> the same dictionary as read_cpu_state, plus 'online'."""
    files: dict[tuple[int, str], str] = {}
    online: list[int] | None = None
    for line in text.splitlines():
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            continue  # shell noise (motd, warnings) is not ours to interpret
        cpu, name, value = parts
        if cpu == "online":
            try:
                online = parse_cpu_list(value) if value.strip() else None
            except ValueError:
                online = None
            continue
        if cpu.isdigit() and name in _FILE_KEYS:
            files[(int(cpu), name)] = value
    state = cpu_state_from_files(files)
    if online is not None:
        state["online"] = online
    return state


def parse_getprop(text: str) -> dict[str, str]:
    """`adb shell getprop` output ('[ro.product.model]: [Pixel 7]' lines) -> {key: value}."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\[([^\]]+)\]: \[(.*)\]\s*$", line.rstrip("\r"))
        if m:
            props[m.group(1)] = m.group(2)
    return props


def android_identity(props: Mapping[str, str]) -> dict[str, str | None]:
    """The getprop facts a measurement carries: model, SoC, Android version and build."""
    return {
        "manufacturer": props.get("ro.product.manufacturer"),
        "model": props.get("ro.product.model"),
        "device": props.get("ro.product.device"),
        "soc": props.get("ro.soc.model") or props.get("ro.board.platform"),
        "android_version": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "build": props.get("ro.build.fingerprint"),
        "abi": props.get("ro.product.cpu.abi"),
    }


# Governors that hold or chase the top clock under load; anything else (powersave, ondemand
# with a low ceiling, userspace at a low clock) makes latencies depend on the governor's mood.
_STEADY_GOVERNORS = ("performance", "schedutil")


def conditions_warnings(before: Mapping, after: Mapping, cpus: Iterable[int] | None = None) -> list[str]:
    """Human-readable reasons a run's conditions are doubtful (empty list when none are seen).

    `cpus`: the CPUs the run was pinned to (default: every CPU in the state)."""
    wanted = {str(c) for c in cpus} if cpus else None
    warnings: list[str] = []
    govs = {c: g for c, g in (before.get("governor") or {}).items() if wanted is None or c in wanted}
    odd = sorted({g for g in govs.values() if g not in _STEADY_GOVERNORS})
    if odd:
        warnings.append(f"CPU governor {', '.join(odd)} (expected performance or schedutil); "
                        "clocks may wander during the run")
    if not govs:
        warnings.append("CPU governor unknown (cpufreq not readable); the clock during the run is not recorded")
    cur_b, cur_a = before.get("cur_mhz") or {}, after.get("cur_mhz") or {}
    hw_max = before.get("hw_max_mhz") or {}
    for c in sorted(set(cur_b) & set(cur_a), key=int):
        if wanted is not None and c not in wanted:
            continue
        b, a = cur_b[c], cur_a[c]
        top = hw_max.get(c) or max(b, a)
        # A clock that fell by more than 10% of the top clock across the run: throttling.
        if top and b - a > 0.1 * top:
            warnings.append(f"cpu{c} clock fell from {b} to {a} MHz during the run (thermal throttling?)")
    return warnings


def _read_file(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
