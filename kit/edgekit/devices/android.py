"""Benchmark an artifact on an Android phone over adb, with the tools the runtimes ship.

- .pte: the ExecuTorch benchmark app "minibench" (org.pytorch.minibench). The artifact is
  pushed to /data/local/tmp/minibench, the BenchmarkActivity started with `am start`, and
  files/benchmark_results.json read back with `run-as`.
- .tflite: LiteRT's `benchmark_model` binary, pushed once to the phone by the user (default
  /data/local/tmp/benchmark_model), run under `taskset` pinned to the big cores.
- .onnx: `onnxruntime_perf_test` the same way (default /data/local/tmp/onnxruntime_perf_test).

Each run records the CPU governor and clocks before and after (one `adb shell` reading the
cpufreq files, see sysinfo.ANDROID_CPU_DUMP) and the phone's identity from getprop. Nothing
here has run against a real phone (none is reachable from the machines edgekit is built on);
the command lines and parsers follow the tools' documented formats, and the tests drive them
with an adb stand-in and sample outputs (tests/fixtures/android/).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import UserError
from . import sysinfo
from .measurements import ArtifactInfo, Measurement, MeasurementStore, artifact_info
from .ssh import RemoteTimeoutError, run_bounded

MINIBENCH_PACKAGE = "org.pytorch.minibench"
MINIBENCH_ACTIVITY = f"{MINIBENCH_PACKAGE}/{MINIBENCH_PACKAGE}.BenchmarkActivity"
MINIBENCH_DIR = "/data/local/tmp/minibench"
MINIBENCH_RESULTS = "files/benchmark_results.json"
DEVICE_DIR = "/data/local/tmp/edgekit"
DEFAULT_TOOLS = {"tflite": "/data/local/tmp/benchmark_model", "onnx": "/data/local/tmp/onnxruntime_perf_test"}
TOOL_NAMES = {"executorch": "minibench", "tflite": "benchmark_model", "onnx": "onnxruntime_perf_test"}
DEFAULT_TIMEOUT_S = 600.0
ADB_TIMEOUT_S = 60.0  # any single housekeeping call (devices, push of a small model, getprop)


class AdbError(UserError):
    """Talking to the phone failed; one line saying why and what to do."""


class NoDeviceError(AdbError):
    pass


class UnauthorizedDeviceError(AdbError):
    pass


class SeveralDevicesError(AdbError):
    pass


class MissingToolError(AdbError):
    pass


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # device | unauthorized | offline | recovery | ...
    info: dict[str, str] = field(default_factory=dict)  # model:, product:, device:, transport_id:


def parse_devices(text: str) -> list[AdbDevice]:
    """`adb devices -l` output -> devices (the header and daemon messages are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        info = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        out.append(AdbDevice(parts[0], parts[1], info))
    return out


def choose_device(devices: list[AdbDevice], serial: str | None) -> AdbDevice:
    """The one device to use, or a one-line error saying what to do."""
    listing = ", ".join(f"{d.serial} ({d.state}{', ' + d.info['model'] if 'model' in d.info else ''})"
                        for d in devices)
    if serial is not None:
        match = [d for d in devices if d.serial == serial]
        if not match:
            raise NoDeviceError(f"no device with serial {serial} is connected"
                                + (f"; connected: {listing}" if devices else "; adb sees no device at all"))
        chosen = match[0]
    else:
        ready = [d for d in devices if d.state == "device"]
        if len(ready) > 1:
            raise SeveralDevicesError(f"{len(ready)} devices are connected ({listing}); choose one with --serial")
        if not ready:
            unauthorized = [d for d in devices if d.state == "unauthorized"]
            if unauthorized:
                chosen = unauthorized[0]
            elif devices:
                raise NoDeviceError(f"no usable device ({listing}); reconnect the phone and check `adb devices`")
            else:
                raise NoDeviceError("no Android device connected; plug in the phone with USB debugging enabled "
                                    "(Settings > Developer options) and check `adb devices`")
        else:
            chosen = ready[0]
    if chosen.state == "unauthorized":
        raise UnauthorizedDeviceError(f"device {chosen.serial} is unauthorized; unlock the phone and accept the "
                                      "'Allow USB debugging?' prompt, then run again")
    if chosen.state != "device":
        raise NoDeviceError(f"device {chosen.serial} is {chosen.state}; reconnect it (or `adb reconnect`) and "
                            "check `adb devices`")
    return chosen


@dataclass(frozen=True)
class Adb:
    """adb bound to one serial. `adb` is the executable (default: `adb` on PATH, or $EDGEKIT_ADB)."""

    serial: str | None = None
    adb: str = field(default_factory=lambda: os.environ.get("EDGEKIT_ADB", "adb"))

    def argv(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def run(self, *args: str, timeout_s: float = ADB_TIMEOUT_S, what: str | None = None) -> Any:
        what = what or f"adb {' '.join(args)[:60]}"
        done = run_bounded(self.argv(*args), timeout_s, what)
        if done.returncode != 0:
            raise _adb_failure(self, done, what)
        return done

    def shell(self, command: str, timeout_s: float = ADB_TIMEOUT_S, what: str | None = None, check: bool = True):
        """`adb shell <command>`: the command is one string, run by the phone's sh."""
        what = what or f"adb shell {command[:60]}"
        done = run_bounded(self.argv("shell", command), timeout_s, what)
        if check and done.returncode != 0:
            raise _adb_failure(self, done, what)
        return done

    def devices(self) -> list[AdbDevice]:
        done = run_bounded([self.adb, "devices", "-l"], ADB_TIMEOUT_S, "adb devices")
        if done.returncode != 0:
            raise AdbError(f"`adb devices` failed (exit {done.returncode}: {_last(done.stderr)}); "
                           "is the Android platform-tools adb installed?")
        return parse_devices(done.stdout)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _adb_failure(adb: Adb, done: Any, what: str) -> AdbError:
    text = (done.stderr or "") + "\n" + (done.stdout or "")
    if "unauthorized" in text:
        return UnauthorizedDeviceError(f"device {adb.serial or ''} is unauthorized; accept the USB debugging "
                                       "prompt on the phone")
    if "more than one device" in text:
        return SeveralDevicesError("several devices are connected; choose one with --serial")
    if re.search(r"no devices/emulators found|device '.*' not found|device offline", text):
        return NoDeviceError(f"the phone went away during {what} ({_last(text)}); reconnect it and run again")
    return AdbError(f"{what} failed on the phone (exit {done.returncode}: {_last(text) or 'no message'})")


def connect_adb(serial: str | None = None, adb: str | None = None) -> Adb:
    """Pick the device (by serial, or the only one connected) and return an Adb bound to it."""
    base = Adb(None, adb) if adb else Adb(None)
    chosen = choose_device(base.devices(), serial)
    return Adb(chosen.serial, base.adb)


# --------------------------------------------------------------------------- command lines


def minibench_start_args(num_iter: int, num_warmup: int, model_dir: str = MINIBENCH_DIR) -> list[str]:
    """`adb shell` arguments that start the ExecuTorch benchmark activity (waits for launch)."""
    return ["am", "start", "-W", "-S", "-n", MINIBENCH_ACTIVITY, "--es", "model_dir", model_dir,
            "--ei", "num_iter", str(int(num_iter)), "--ei", "num_warm_up_iter", str(int(num_warmup))]


def benchmark_model_command(tool: str, model: str, threads: int, runs: int, warmup: int,
                            cpus: Sequence[int]) -> str:
    """LiteRT benchmark_model pinned with taskset. min_secs=0 makes the run counts exact
    (otherwise the tool keeps running until a minimum duration has passed)."""
    cmd = [tool, f"--graph={model}", f"--num_threads={int(threads)}", f"--num_runs={int(runs)}",
           f"--warmup_runs={int(warmup)}", "--min_secs=0", "--warmup_min_secs=0", "--use_xnnpack=true"]
    return _pinned(cpus, cmd)


def perf_test_command(tool: str, model: str, threads: int, runs: int, cpus: Sequence[int]) -> str:
    """onnxruntime_perf_test pinned with taskset: CPU provider, fixed run count, generated
    inputs (-I), percentiles (-s), `threads` intra-op threads and one inter-op thread."""
    cmd = [tool, "-e", "cpu", "-m", "times", "-r", str(int(runs)), "-x", str(int(threads)), "-y", "1", "-I", "-s",
           model]
    return _pinned(cpus, cmd)


def _pinned(cpus: Sequence[int], cmd: list[str]) -> str:
    text = " ".join(shlex.quote(c) for c in cmd)
    return f"taskset {sysinfo.taskset_mask(cpus)} {text}" if cpus else text


# --------------------------------------------------------------------------- parsers


@dataclass(frozen=True)
class ToolResult:
    """What one tool run reported, in edgekit's units (ms, MB)."""

    tool: str
    stats: dict[str, float]
    runs: int | None = None
    load_ms: float | None = None
    peak_mem_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_MINIBENCH_METRICS = {"avg_inference_latency(ms)": "mean_ms", "trimmean_inference_latency(ms)": "trimmed_mean_ms"}


def parse_minibench(text: str) -> ToolResult:
    """files/benchmark_results.json of org.pytorch.minibench: a list of BenchmarkMetric objects
    {benchmarkModel{name, backend, quantization}, metric, actualValue, targetValue, deviceInfo}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AdbError(f"minibench's benchmark_results.json is not JSON ({e.msg}); was the run cut short?") from None
    if not isinstance(data, list) or not data:
        raise AdbError("minibench's benchmark_results.json holds no metrics; expected a list of "
                       "{benchmarkModel, metric, actualValue} objects")
    stats: dict[str, float] = {}
    extra: dict[str, Any] = {}
    models = set()
    load_ms = peak = None
    for i, item in enumerate(data):
        if not (isinstance(item, dict) and isinstance(item.get("metric"), str)
                and isinstance(item.get("actualValue"), (int, float))):
            raise AdbError(f"minibench result {i} is not a {{metric, actualValue}} object; the app version "
                           "may be newer than edgekit understands")
        model = item.get("benchmarkModel") or {}
        models.add(model.get("name"))
        name, value = item["metric"], float(item["actualValue"])
        if name in _MINIBENCH_METRICS:
            stats[_MINIBENCH_METRICS[name]] = value
        elif name == "model_load_time(ms)":
            load_ms = value
        elif name == "load_status":
            if value != 0:
                raise AdbError(f"minibench could not load the model (load_status {int(value)}, an ExecuTorch "
                               "error code); check that the app's ExecuTorch version matches edgekit's export")
        elif name == "ram_pss_usage(mb)":
            peak = value
        else:
            extra[name] = value  # newer metrics are kept, not interpreted
        if isinstance(item.get("deviceInfo"), dict):
            extra["deviceInfo"] = item["deviceInfo"]
        if model.get("backend"):
            extra["backend"] = model["backend"]
    if len(models) > 1:
        raise AdbError(f"minibench reported several models ({', '.join(sorted(map(str, models)))}); "
                       f"{MINIBENCH_DIR} must hold exactly one .pte")
    if not stats:
        raise AdbError("minibench reported no inference latency (no avg/trimmean_inference_latency(ms) metric)")
    return ToolResult("minibench", stats, None, load_ms, peak, extra)


_COUNT_LINE = re.compile(r"count=(\d+)\s+first=(\d+)\s+curr=(\d+)\s+min=(\d+)\s+max=(\d+)\s+avg=([\d.eE+-]+)"
                         r"\s+std=(\d+)(?:\s+p5=(\d+)\s+median=(\d+)\s+p95=(\d+))?")
_TIMINGS_LINE = re.compile(r"Inference timings in us: Init: ([\d.]+), First inference: ([\d.]+), "
                           r"Warmup \(avg\): ([\d.eE+-]+), Inference \(avg\): ([\d.eE+-]+)")


def parse_benchmark_model(text: str) -> ToolResult:
    """LiteRT benchmark_model output. Its `count=... first=... min=... max=... avg=... std=...`
    lines (microseconds; newer builds add p5, median, p95) come once for the warm-up and once
    for the timed runs; the last one is the timed runs. Older builds repeat it after
    'Timings (microseconds):'."""
    counts = [m for m in _COUNT_LINE.finditer(text)]
    if not counts:
        failure = re.search(r"(?im)^(?:ERROR: )?(.*(?:Failed|failed|Error|error).*)$", text)
        raise AdbError("benchmark_model printed no timings"
                       + (f" ({failure.group(1).strip()[:200]})" if failure else f" (last line: {_last(text)[:200]})"))
    m = counts[-1]
    us = 1e-3
    stats = {"mean_ms": float(m.group(6)) * us, "std_ms": float(m.group(7)) * us,
             "min_ms": float(m.group(4)) * us, "max_ms": float(m.group(5)) * us}
    if m.group(9) is not None:
        stats["median_ms"] = float(m.group(9)) * us
        stats["p95_ms"] = float(m.group(10)) * us
        p5 = float(m.group(8)) * us
    else:
        p5 = None
    load_ms = None
    t = _TIMINGS_LINE.search(text)
    if t:
        load_ms = float(t.group(1)) * us
    else:
        init = re.search(r"Initialized session in ([\d.]+)\s*ms", text)
        load_ms = float(init.group(1)) if init else None
    mem = re.search(r"Memory footprint delta from the start of the tool \(MB\): init=([\d.]+) overall=([\d.]+)", text)
    extra: dict[str, Any] = {"first_ms": float(m.group(2)) * us}
    if p5 is not None:
        extra["p5_ms"] = p5
    return ToolResult("benchmark_model", stats, int(m.group(1)), load_ms, float(mem.group(2)) if mem else None, extra)


def parse_perf_test(text: str) -> ToolResult:
    """onnxruntime_perf_test output: 'Average inference time cost: X ms' ('... cost total:' in
    newer builds), 'Session creation time cost: X s', 'Total inference requests: N', and with
    -s 'Min/Max/P50/P90/P95/P99 Latency: X s'; 'Peak working set size: N bytes'."""
    def num(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    avg = num(r"Average inference time cost(?: total)?:\s*([\d.eE+-]+)\s*ms")
    if avg is None:
        raise AdbError(f"onnxruntime_perf_test printed no 'Average inference time cost' (last line: "
                       f"{_last(text)[:200]})")
    stats = {"mean_ms": avg}
    for key, label in (("min_ms", "Min"), ("max_ms", "Max"), ("p50_ms", "P50"), ("p90_ms", "P90"),
                       ("p95_ms", "P95")):
        v = num(rf"{label} Latency:\s*([\d.eE+-]+)\s*s")
        if v is not None:
            stats[key] = v * 1e3
    if "p50_ms" in stats:
        stats["median_ms"] = stats.pop("p50_ms")
    session = num(r"Session creation time cost:\s*([\d.eE+-]+)\s*s")
    requests = num(r"Total inference requests:\s*(\d+)")
    peak = num(r"Peak working set size:\s*(\d+)\s*bytes")
    first = num(r"First inference time cost:\s*([\d.]+)\s*ms")
    return ToolResult("onnxruntime_perf_test", stats, int(requests) if requests else None,
                      session * 1e3 if session is not None else None, peak / 2**20 if peak is not None else None,
                      {"first_ms": first} if first is not None else {})


# --------------------------------------------------------------------------- measuring


def _tool_present(adb: Adb, path: str) -> bool:
    done = adb.shell(f"[ -x {shlex.quote(path)} ] && echo present || echo absent", what=f"looking for {path}")
    return "present" in done.stdout


def _app_installed(adb: Adb, package: str) -> bool:
    done = adb.shell(f"pm path {package}", check=False, what=f"looking for the app {package}")
    return done.returncode == 0 and "package:" in done.stdout


def _cpu_state(adb: Adb) -> dict:
    return sysinfo.parse_cpu_dump(adb.shell(sysinfo.ANDROID_CPU_DUMP, what="reading the CPU clocks").stdout)


def _run_minibench(adb: Adb, info: ArtifactInfo, runs: int, warmup: int, timeout_s: float) -> ToolResult:
    if not _app_installed(adb, MINIBENCH_PACKAGE):
        raise MissingToolError(f"the ExecuTorch benchmark app ({MINIBENCH_PACKAGE}) is not installed on "
                               f"{adb.serial}; build and install it as targets/android/README.md describes")
    adb.shell(f"rm -rf {MINIBENCH_DIR} && mkdir -p {MINIBENCH_DIR}", what="preparing the model folder")
    adb.run("push", str(info.path), f"{MINIBENCH_DIR}/{info.path.name}", timeout_s=ADB_TIMEOUT_S + info.path.stat().st_size / 5e6,
            what=f"pushing {info.name}")
    adb.shell(f"run-as {MINIBENCH_PACKAGE} rm -f {MINIBENCH_RESULTS}", check=False, what="clearing old results")
    adb.shell(" ".join(minibench_start_args(runs, warmup)), what="starting the benchmark activity")
    # `am start -W` returns once the activity is up; the benchmark then runs inside it and
    # writes its results file at the end. Poll for it, bounded by the timeout.
    deadline = time.monotonic() + timeout_s
    while True:
        done = adb.shell(f"run-as {MINIBENCH_PACKAGE} cat {MINIBENCH_RESULTS}", check=False,
                         what="reading the benchmark results")
        if done.returncode == 0 and done.stdout.strip().endswith("]"):
            return parse_minibench(done.stdout)
        if "not debuggable" in done.stdout + done.stderr:
            raise MissingToolError(f"run-as cannot read {MINIBENCH_PACKAGE}'s files (the installed app is not "
                                   "debuggable); install the debug build of minibench")
        if time.monotonic() > deadline:
            adb.shell(f"am force-stop {MINIBENCH_PACKAGE}", check=False, what="stopping the app")
            raise RemoteTimeoutError(f"minibench wrote no results within {timeout_s:g} s and was stopped; raise "
                                     "--timeout for a large model, or check the app's log (adb logcat)")
        time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))


def _run_native(adb: Adb, info: ArtifactInfo, tool: str, threads: int, runs: int, warmup: int,
                cpus: Sequence[int], timeout_s: float) -> ToolResult:
    name = TOOL_NAMES[info.format]
    if not _tool_present(adb, tool):
        raise MissingToolError(f"{name} not found at {tool} on {adb.serial}; push the prebuilt android_arm64 binary "
                               f"there and chmod +x it (targets/android/README.md), or give its path with --tool")
    remote = f"{DEVICE_DIR}/{info.sha256}{info.path.suffix}"
    adb.shell(f"mkdir -p {DEVICE_DIR}", what="preparing the model folder")
    adb.run("push", str(info.path), remote, timeout_s=ADB_TIMEOUT_S + info.path.stat().st_size / 5e6,
            what=f"pushing {info.name}")
    if info.format == "tflite":
        cmd = benchmark_model_command(tool, remote, threads, runs, warmup, cpus)
    else:
        cmd = perf_test_command(tool, remote, threads, runs, cpus)
    done = adb.shell(cmd, timeout_s=timeout_s, check=False, what=f"{name} on {adb.serial}")
    output = done.stdout + "\n" + done.stderr
    if done.returncode != 0 and not re.search(r"count=\d+|Average inference time cost", output):
        raise AdbError(f"{name} failed on {adb.serial} (exit {done.returncode}: {_last(output)[:200] or 'no message'})")
    return parse_benchmark_model(output) if info.format == "tflite" else parse_perf_test(output)


def run_on_phone(adb: Adb, artifact: str | os.PathLike, *, threads: int = 4, cpus: Sequence[int] = (),
                 runs: int = 50, warmup: int = 10, tool: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 info: ArtifactInfo | None = None) -> tuple[ArtifactInfo, ToolResult, dict, dict, dict]:
    """Run the artifact's tool; returns (info, tool result, cpu state before, after, getprop identity)."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise UserError(f"--runs {runs} / warmup {warmup} / --threads {threads}: expected runs >= 1, "
                        "warmup >= 0, threads >= 1")
    info = info or artifact_info(artifact)
    props = sysinfo.parse_getprop(adb.shell("getprop", what="reading the phone's properties").stdout)
    before = _cpu_state(adb)
    if info.format == "executorch":
        result = _run_minibench(adb, info, runs, warmup, timeout_s)
    else:
        result = _run_native(adb, info, tool or DEFAULT_TOOLS[info.format], threads, runs, warmup, cpus, timeout_s)
    after = _cpu_state(adb)
    return info, result, before, after, sysinfo.android_identity(props)


def bench_over_adb(artifact: str | os.PathLike, device: str, *, serial: str | None = None,
                   threads: int | None = None, cpus: Sequence[int] | None = None, runs: int = 50, warmup: int = 10,
                   tool: str | None = None, adb: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                   store: MeasurementStore | None = None, record: bool = True) -> Measurement:
    """Benchmark `artifact` on the phone registered as `device` (threads and big cores default
    to the registry's); record the Measurement when it succeeds."""
    threads, cpus = _device_defaults(device, threads, cpus)
    info = artifact_info(artifact)  # refuse a bad artifact before touching the phone
    conn = connect_adb(serial, adb)
    info, result, before, after, identity = run_on_phone(conn, artifact, threads=threads, cpus=cpus, runs=runs,
                                                         warmup=warmup, tool=tool, timeout_s=timeout_s, info=info)
    m = measurement_from_tool(device, conn.serial or "", info, result, before, after, identity,
                              threads=threads, cpus=cpus, runs=runs, warmup=warmup)
    if record:
        (store or MeasurementStore()).add(m)
    return m


def measurement_from_tool(device: str, serial: str, info: ArtifactInfo, result: ToolResult, before: dict,
                          after: dict, identity: dict, *, threads: int, cpus: Sequence[int], runs: int,
                          warmup: int) -> Measurement:
    pinned = info.format != "executorch"
    warnings = sysinfo.conditions_warnings(before, after, cpus if pinned else None)
    if not pinned:
        warnings.append("minibench runs inside an app started by the activity manager: not pinned with taskset, "
                        "threads chosen by the app")
    if result.tool == "onnxruntime_perf_test":
        warnings.append("onnxruntime_perf_test has no warm-up option: one untimed first inference only")
    if info.manifest_path is None:
        warnings.append("no manifest.json next to the artifact; identified by its sha256 only")
    versions = {k: v for k, v in identity.items() if k in ("android_version", "sdk", "build")}
    return Measurement(device=device, artifact=info.name, artifact_sha256=info.sha256, format=info.format,
                       via="adb", tool=result.tool, stats=dict(result.stats), runs=result.runs or runs,
                       warmup=warmup if result.tool != "onnxruntime_perf_test" else 1,
                       threads=threads if pinned else None, affinity=tuple(cpus) if pinned else (),
                       load_ms=result.load_ms, peak_rss_mb=result.peak_mem_mb, before=before, after=after,
                       system={**identity, "serial": serial, **({"tool_extra": result.extra} if result.extra else {})},
                       runtime_versions=versions, warnings=tuple(warnings), address=serial)


def _device_defaults(device: str, threads: int | None, cpus: Sequence[int] | None) -> tuple[int, list[int]]:
    try:
        from .registry import get_device

        dev = get_device(device)
    except UserError:
        return threads or 4, list(cpus or [])
    return (threads if threads is not None else dev.default_threads,
            list(cpus) if cpus is not None else list(dev.affinity))


# --------------------------------------------------------------------------- Connection


class AdbConnection:
    """edgekit.devices.connection.Connection over adb: what `edgekit profile --device pixel7` uses.

    A latency table entry needs median, p10 and p90. The phone tools report other
    percentiles; the nearest outer ones stand in and are named in `percentiles`:
    benchmark_model p5/p95, onnxruntime_perf_test min/P90. minibench reports no spread at all,
    so it cannot feed a table: profile Android with the tflite or onnx backend."""

    def __init__(self, device: Any, serial: str | None = None, adb: str | None = None, tool: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, cpus: Sequence[int] | None = None):
        self.device = device
        self.adb = connect_adb(serial, adb)
        self.tool = tool
        self.timeout_s = timeout_s
        # Big cores each run is pinned to with taskset (default: the device's registered affinity).
        self.cpus = list(cpus) if cpus is not None else list(getattr(device, "affinity", ()) or ())

    def time_artifact(self, path: str, warmup: int, runs: int, threads: int) -> dict:
        info, result, *_ = run_on_phone(self.adb, path, threads=threads, cpus=self.cpus, runs=runs, warmup=warmup,
                                        tool=self.tool, timeout_s=self.timeout_s)
        s = result.stats
        if result.tool == "minibench":
            raise UserError("minibench reports only mean and trimmed mean, no percentiles, so it cannot build a "
                            "latency table; profile the phone with --backend tflite or --backend onnx")
        if result.tool == "benchmark_model" and "median_ms" in s:
            lo, hi, names = result.extra.get("p5_ms", s["min_ms"]), s["p95_ms"], "p5/p95"
        elif result.tool == "benchmark_model":
            raise UserError("this benchmark_model build prints no median (older builds print only count, min, max, "
                            "avg and std); use a recent LiteRT benchmark_model that prints p5/median/p95")
        else:
            lo, hi, names = s.get("min_ms", s["mean_ms"]), s.get("p90_ms", s["mean_ms"]), "min/p90"
        med = s.get("median_ms", s["mean_ms"])
        return {"median_ms": med, "p10_ms": min(lo, med), "p90_ms": max(hi, med), "n": result.runs or runs,
                "percentiles": names, "tool": result.tool}

    def environment(self) -> dict[str, Any]:
        props = sysinfo.parse_getprop(self.adb.shell("getprop", what="reading the phone's properties").stdout)
        state = _cpu_state(self.adb)
        identity = sysinfo.android_identity(props)
        return {**identity, "serial": self.adb.serial, "affinity": list(self.cpus),
                "governor": state.get("governor"), "cur_mhz": state.get("cur_mhz"), "max_mhz": state.get("max_mhz"),
                "runtime_versions": {k: v for k, v in identity.items() if k in ("android_version", "sdk")}}


def connect_android(device: Any, serial: str | None = None, tool: str | None = None, adb: str | None = None,
                    timeout_s: float = DEFAULT_TIMEOUT_S, cpus: Sequence[int] | None = None,
                    **_other: Any) -> AdbConnection:
    """The adb connector of edgekit.devices.connection.connect: --serial, else the device file's address."""
    return AdbConnection(device, serial or getattr(device, "address", "") or None, adb=adb, tool=tool,
                         timeout_s=timeout_s, cpus=cpus)
