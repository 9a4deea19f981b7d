"""Android runner: command lines, parsers against sample outputs of each tool, and the whole
path driven through an adb stand-in on PATH (no phone is reachable from here)."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from edgekit.devices import android, sysinfo
from edgekit.devices.measurements import MeasurementStore, sha256_file
from edgekit.devices.ssh import RemoteTimeoutError

FIX = Path(__file__).parent / "fixtures" / "android"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


# --------------------------------------------------------------------------- parsers


def test_parse_minibench_results():
    r = android.parse_minibench(fixture("minibench_benchmark_results.json"))
    assert r.tool == "minibench"
    assert r.stats == {"mean_ms": 41.83, "trimmed_mean_ms": 40.12}
    assert r.load_ms == 212.4 and r.peak_mem_mb == 38.0
    assert r.extra["backend"] == "XNNPACK" and r.extra["deviceInfo"]["device"] == "panther"


def test_parse_minibench_refuses_failures():
    items = json.loads(fixture("minibench_benchmark_results.json"))
    for it in items:
        if it["metric"] == "load_status":
            it["actualValue"] = 34.0
    with pytest.raises(android.AdbError, match="load_status 34"):
        android.parse_minibench(json.dumps(items))
    with pytest.raises(android.AdbError, match="not JSON"):
        android.parse_minibench('[{"metric": ')
    items = json.loads(fixture("minibench_benchmark_results.json"))
    with pytest.raises(android.AdbError, match="no inference latency"):
        android.parse_minibench(json.dumps([i for i in items if "latency" not in i["metric"]]))
    two = items + [dict(items[0], benchmarkModel={"name": "other", "backend": "XNNPACK", "quantization": ""})]
    with pytest.raises(android.AdbError, match="several models"):
        android.parse_minibench(json.dumps(two))


def test_parse_benchmark_model_takes_the_timed_runs_not_the_warmup():
    r = android.parse_benchmark_model(fixture("benchmark_model_pixel7.txt"))
    assert r.runs == 50
    assert r.stats == pytest.approx({"mean_ms": 6.1746, "std_ms": 0.211, "min_ms": 5.987, "max_ms": 7.215,
                                     "median_ms": 6.122, "p95_ms": 6.690})
    assert r.extra["p5_ms"] == pytest.approx(6.001) and r.load_ms == pytest.approx(31.8)
    assert r.peak_mem_mb == pytest.approx(9.83203)


def test_parse_benchmark_model_legacy_output():
    r = android.parse_benchmark_model(fixture("benchmark_model_legacy.txt"))
    assert r.runs == 163 and r.stats["mean_ms"] == pytest.approx(6.1419) and "median_ms" not in r.stats
    assert r.load_ms == pytest.approx(35.2)
    with pytest.raises(android.AdbError, match="no timings .*Failed to load model"):
        android.parse_benchmark_model("INFO: STARTING!\nERROR: Failed to load model /x.tflite\n")


def test_parse_perf_test():
    r = android.parse_perf_test(fixture("onnxruntime_perf_test_pixel7.txt"))
    assert r.runs == 50 and r.load_ms == pytest.approx(41.2)
    assert r.stats == pytest.approx({"mean_ms": 7.96, "min_ms": 7.512, "max_ms": 9.874, "median_ms": 7.901,
                                     "p90_ms": 8.512, "p95_ms": 8.903})
    assert r.peak_mem_mb == pytest.approx(41566208 / 2**20)
    newer = fixture("onnxruntime_perf_test_pixel7.txt").replace("time cost:", "time cost total:")
    assert android.parse_perf_test(newer).stats["mean_ms"] == pytest.approx(7.96)
    with pytest.raises(android.AdbError, match="no 'Average inference time cost'"):
        android.parse_perf_test("Failed to create session\n")


def test_parse_getprop_and_cpufreq_dump():
    ident = sysinfo.android_identity(sysinfo.parse_getprop(fixture("getprop_pixel7.txt")))
    assert ident["model"] == "Pixel 7" and ident["android_version"] == "14" and ident["soc"] == "GS201"
    state = sysinfo.parse_cpu_dump(fixture("cpufreq_dump_pixel7.txt"))
    assert state["online"] == list(range(8))
    assert state["governor"]["7"] == "sched_pixel" and state["cur_mhz"]["6"] == 2850 and state["cur_mhz"]["0"] == 1803


# --------------------------------------------------------------------------- command lines


def test_command_lines():
    assert android.minibench_start_args(50, 10) == [
        "am", "start", "-W", "-S", "-n", "org.pytorch.minibench/org.pytorch.minibench.BenchmarkActivity",
        "--es", "model_dir", "/data/local/tmp/minibench", "--ei", "num_iter", "50", "--ei", "num_warm_up_iter", "10"]
    assert android.benchmark_model_command("/data/local/tmp/benchmark_model", "/data/local/tmp/edgekit/m.tflite",
                                           4, 50, 10, [4, 5, 6, 7]) == (
        "taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/edgekit/m.tflite --num_threads=4 "
        "--num_runs=50 --warmup_runs=10 --min_secs=0 --warmup_min_secs=0 --use_xnnpack=true")
    assert android.perf_test_command("/data/local/tmp/onnxruntime_perf_test", "/x/m.onnx", 2, 30, [6, 7]) == (
        "taskset c0 /data/local/tmp/onnxruntime_perf_test -e cpu -m times -r 30 -x 2 -y 1 -I -s /x/m.onnx")
    assert android.perf_test_command("t", "m.onnx", 1, 5, []).startswith("t -e cpu")


def test_choose_device():
    one = android.parse_devices(fixture("adb_devices_one.txt"))
    assert one[0].serial == "2A121FDH2000XY" and one[0].info["model"] == "Pixel_7"
    assert android.choose_device(one, None).serial == "2A121FDH2000XY"
    several = android.parse_devices(fixture("adb_devices_several.txt"))
    with pytest.raises(android.SeveralDevicesError, match="2 devices .*--serial"):
        android.choose_device(several, None)
    assert android.choose_device(several, "35011FDH300ABC").info["model"] == "Pixel_8"
    with pytest.raises(android.NoDeviceError, match="no device with serial X1"):
        android.choose_device(several, "X1")
    with pytest.raises(android.UnauthorizedDeviceError, match="Allow USB debugging"):
        android.choose_device(android.parse_devices(fixture("adb_devices_unauthorized.txt")), None)
    with pytest.raises(android.NoDeviceError, match="no Android device connected"):
        android.choose_device(android.parse_devices(fixture("adb_devices_none.txt")), None)


# --------------------------------------------------------------------------- through the adb stand-in


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {FIX / 'fake_adb.py'} \"$@\"\n")
    adb.chmod(adb.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "adb-state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(state))
    monkeypatch.delenv("EDGEKIT_ADB", raising=False)

    class Phone:
        def __init__(self):
            self.scenario = {"devices": fixture("adb_devices_one.txt"), "getprop": fixture("getprop_pixel7.txt"),
                             "cpufreq": fixture("cpufreq_dump_pixel7.txt"), "packages": [], "tools": [],
                             "outputs": {"benchmark_model": fixture("benchmark_model_pixel7.txt"),
                                         "onnxruntime_perf_test": fixture("onnxruntime_perf_test_pixel7.txt")},
                             "minibench_results": fixture("minibench_benchmark_results.json")}

        def set(self, **kw):
            self.scenario.update(kw)
            (state / "scenario.json").write_text(json.dumps(self.scenario))

        def calls(self) -> list[list[str]]:
            path = state / "calls.jsonl"
            return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []

    phone = Phone()
    phone.set()
    return phone


def _artifact(tmp_path: Path, suffix: str) -> Path:
    a = tmp_path / "art" / f"tiny{suffix}"
    a.parent.mkdir()
    a.write_bytes(b"model bytes " + suffix.encode())
    (a.parent / "manifest.json").write_text(json.dumps({"artifact": {"sha256": sha256_file(a)}}))
    return a


def test_tflite_over_adb_pins_big_cores_and_records(fake_adb, tmp_path):
    fake_adb.set(tools=["/data/local/tmp/benchmark_model"])
    store = MeasurementStore(tmp_path / "m.json")
    m = android.bench_over_adb(_artifact(tmp_path, ".tflite"), "pixel7", runs=50, warmup=10, store=store)
    assert m.via == "adb" and m.tool == "benchmark_model" and m.threads == 4 and m.affinity == (4, 5, 6, 7)
    assert m.stats["median_ms"] == pytest.approx(6.122) and m.runs == 50 and m.load_ms == pytest.approx(31.8)
    assert m.system["model"] == "Pixel 7" and m.system["serial"] == "2A121FDH2000XY"
    assert m.before["governor"]["4"] == "sched_pixel" and m.after["cur_mhz"]["6"] == 2850
    assert any("sched_pixel" in w for w in m.warnings)  # not performance/schedutil: flagged
    shell = [c for c in fake_adb.calls() if "shell" in c]
    run = [c[-1] for c in shell if c[-1].startswith("taskset")]
    assert run == [f"taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/edgekit/{m.artifact_sha256}"
                   ".tflite --num_threads=4 --num_runs=50 --warmup_runs=10 --min_secs=0 --warmup_min_secs=0 "
                   "--use_xnnpack=true"]
    # Clocks were read before and after the run, and every call named the serial.
    dumps = [i for i, c in enumerate(shell) if c[-1].startswith("for d in")]
    tasks = [i for i, c in enumerate(shell) if c[-1].startswith("taskset")]
    assert len(dumps) == 2 and dumps[0] < tasks[0] < dumps[1]
    assert all(c[:2] == ["-s", "2A121FDH2000XY"] for c in fake_adb.calls() if c[0] != "devices")
    assert store.find(m.artifact_sha256, "pixel7") == [m]


def test_onnx_over_adb(fake_adb, tmp_path):
    fake_adb.set(tools=["/data/local/tmp/onnxruntime_perf_test"])
    m = android.bench_over_adb(_artifact(tmp_path, ".onnx"), "pixel7", threads=2, cpus=[6, 7], runs=50,
                               record=False)
    assert m.tool == "onnxruntime_perf_test" and m.stats["p90_ms"] == pytest.approx(8.512) and m.affinity == (6, 7)
    assert any(c[-1].startswith("taskset c0 /data/local/tmp/onnxruntime_perf_test -e cpu -m times -r 50 -x 2")
               for c in fake_adb.calls())


def test_pte_over_adb_drives_minibench(fake_adb, tmp_path):
    fake_adb.set(packages=["org.pytorch.minibench"])
    a = _artifact(tmp_path, ".pte")
    m = android.bench_over_adb(a, "pixel7", runs=20, warmup=5, record=False)
    assert m.tool == "minibench" and m.stats == {"mean_ms": 41.83, "trimmed_mean_ms": 40.12}
    assert m.headline_ms == 40.12 and m.affinity == () and any("not pinned" in w for w in m.warnings)
    calls = fake_adb.calls()
    assert ["-s", "2A121FDH2000XY", "push", str(a), "/data/local/tmp/minibench/tiny.pte"] in calls
    starts = [c for c in calls if len(c) > 3 and c[3].startswith("am start")]
    assert starts[0][3] == ("am start -W -S -n org.pytorch.minibench/org.pytorch.minibench.BenchmarkActivity "
                            "--es model_dir /data/local/tmp/minibench --ei num_iter 20 --ei num_warm_up_iter 5")


def test_several_devices_without_serial(fake_adb, tmp_path):
    fake_adb.set(devices=fixture("adb_devices_several.txt"), tools=["/data/local/tmp/benchmark_model"])
    with pytest.raises(android.SeveralDevicesError, match="--serial"):
        android.bench_over_adb(_artifact(tmp_path, ".tflite"), "pixel7", record=False)
    m = android.bench_over_adb(tmp_path / "art" / "tiny.tflite", "pixel8", serial="35011FDH300ABC", record=False)
    assert m.address == "35011FDH300ABC"


def test_unauthorized_and_missing_devices(fake_adb, tmp_path):
    a = _artifact(tmp_path, ".tflite")
    fake_adb.set(devices=fixture("adb_devices_unauthorized.txt"))
    with pytest.raises(android.UnauthorizedDeviceError, match="accept the 'Allow USB debugging"):
        android.bench_over_adb(a, "pixel7", record=False)
    fake_adb.set(devices=fixture("adb_devices_none.txt"))
    with pytest.raises(android.NoDeviceError, match="no Android device connected"):
        android.bench_over_adb(a, "pixel7", record=False)


def test_missing_binary_and_missing_app(fake_adb, tmp_path):
    store = MeasurementStore(tmp_path / "m.json")
    with pytest.raises(android.MissingToolError, match="benchmark_model not found at /data/local/tmp/benchmark_model"):
        android.bench_over_adb(_artifact(tmp_path, ".tflite"), "pixel7", store=store)
    with pytest.raises(android.MissingToolError, match="org.pytorch.minibench.*not installed"):
        android.bench_over_adb(_pte_beside(tmp_path), "pixel7", store=store)
    fake_adb.set(tools=["/opt/bm"])
    m = android.bench_over_adb(tmp_path / "art" / "tiny.tflite", "pixel7", tool="/opt/bm", record=False)
    assert m.tool == "benchmark_model"
    assert not store.path.exists()


def _pte_beside(tmp_path: Path) -> Path:
    p = tmp_path / "pte" / "tiny.pte"
    p.parent.mkdir()
    p.write_bytes(b"pte bytes")
    return p


def test_tool_run_that_times_out(fake_adb, tmp_path):
    fake_adb.set(tools=["/data/local/tmp/benchmark_model"], hang="taskset")
    store = MeasurementStore(tmp_path / "m.json")
    with pytest.raises(RemoteTimeoutError, match="did not finish within 1 s"):
        android.bench_over_adb(_artifact(tmp_path, ".tflite"), "pixel7", timeout_s=1, store=store)
    assert not store.path.exists()


def test_minibench_that_never_writes_results(fake_adb, tmp_path):
    fake_adb.set(packages=["org.pytorch.minibench"], minibench_results="")
    with pytest.raises(RemoteTimeoutError, match="minibench wrote no results within 0.5 s"):
        android.bench_over_adb(_pte_beside(tmp_path), "pixel7", timeout_s=0.5, record=False)
    assert any(c[-1] == "am force-stop org.pytorch.minibench" for c in fake_adb.calls())


def test_connection_protocol_for_profile(fake_adb, tmp_path):
    from edgekit.devices.registry import get_device

    fake_adb.set(tools=["/data/local/tmp/benchmark_model"])
    conn = android.AdbConnection(get_device("pixel7"))
    stats = conn.time_artifact(str(_artifact(tmp_path, ".tflite")), warmup=3, runs=50, threads=4)
    assert stats["median_ms"] == pytest.approx(6.122) and stats["p10_ms"] == pytest.approx(6.001)
    assert stats["p90_ms"] == pytest.approx(6.690) and stats["percentiles"] == "p5/p95" and stats["n"] == 50
    env = conn.environment()
    assert env["model"] == "Pixel 7" and env["governor"]["0"] == "sched_pixel" and env["affinity"] == [4, 5, 6, 7]
