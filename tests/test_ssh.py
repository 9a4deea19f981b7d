"""SSH runner pieces that need no server: command lines, error classification, sysfs readers,
the device-side entry point and the measurement store."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit.devices import measurements, ssh, sysinfo
from edgekit.devices.measurements import Measurement, MeasurementStore, artifact_info
from edgekit.errors import FormatError, UserError
from edgekit.runtime import device_main


def _target(**kw) -> ssh.SshTarget:
    args = dict(port=2222, known_hosts="/tmp/kh", ssh_config="none")
    args.update(kw)
    return ssh.SshTarget("pi@10.0.0.7", **args)


# --------------------------------------------------------------------------- command lines


def test_ssh_argv_is_strict_and_bounded():
    argv = _target().ssh_argv("echo hi")
    assert argv[0] == "ssh" and argv[-2:] == ["pi@10.0.0.7", "echo hi"]
    joined = " ".join(argv)
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=10", "ServerAliveInterval=5",
                "UserKnownHostsFile=/tmp/kh", "-F none", "-p 2222"):
        assert opt in joined
    assert "StrictHostKeyChecking=no" not in joined and "accept-new" not in joined


def test_scp_argv_uses_capital_p_port():
    argv = _target().scp_argv(["/a/b.onnx"], "edgekit/artifacts/x.onnx.part")
    assert argv[0] == "scp" and "-P" in argv and argv[argv.index("-P") + 1] == "2222"
    assert argv[-1] == "pi@10.0.0.7:edgekit/artifacts/x.onnx.part"


def test_target_validation_is_one_line():
    with pytest.raises(UserError, match="not a host"):
        ssh.SshTarget("-oProxyCommand=evil")
    with pytest.raises(UserError, match="not a TCP port"):
        ssh.SshTarget("pi@pi5", port=70000)
    with pytest.raises(UserError, match="no such key file"):
        ssh.SshTarget("pi@pi5", identity="/nonexistent/key")
    assert ssh.SshTarget("pi@pi5", remote_dir="~/bench").remote_dir == "bench"


def test_from_env_fills_unset_fields(monkeypatch):
    monkeypatch.setenv("EDGEKIT_SSH_KNOWN_HOSTS", "/x/known")
    monkeypatch.setenv("EDGEKIT_REMOTE_PYTHON", "/opt/venv/bin/python")
    t = ssh.SshTarget.from_env("pi@pi5", port=22, identity=None)
    assert t.known_hosts == "/x/known" and t.remote_python == "/opt/venv/bin/python" and t.port == 22


def test_run_command_moves_copies_then_runs_under_timeout():
    t = _target()
    plan = ssh.RemotePlan(runtime_dir="edgekit/runtime-abc", artifact_path="/data/a/ff.onnx")
    cmd = ssh.run_command(t, plan, runs=20, warmup=3, threads=4, cpus=[0, 1, 2, 3], expect_sha256="f" * 64,
                          timeout_s=120, need_runtime=True, need_artifact=True)
    assert cmd.index("mv -f /data/a/ff.onnx.part /data/a/ff.onnx") < cmd.index("exec timeout -k 5 120")
    assert "mv \"$HOME\"/edgekit/runtime-abc.part \"$HOME\"/edgekit/runtime-abc/edgekit_runtime" in cmd
    assert "-m edgekit_runtime.device_main /data/a/ff.onnx --runs 20 --warmup 3" in cmd
    assert "--threads 4" in cmd and "--cpus 0-3" in cmd and f"--expect-sha256 {'f' * 64}" in cmd
    cmd2 = ssh.run_command(t, plan, runs=5, warmup=0, threads=None, cpus=[], expect_sha256="f" * 64,
                           timeout_s=60, need_runtime=False, need_artifact=False)
    assert cmd2.startswith("cd ") and "mv " not in cmd2 and "--threads" not in cmd2 and "--cpus" not in cmd2


@pytest.mark.parametrize("stderr, cls, words", [
    ("@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@\nHost key verification failed.\n",
     ssh.HostKeyError, "does not match"),
    ("No ED25519 host key is known for [10.0.0.7]:2222 and you have requested strict checking.\n"
     "Host key verification failed.\n", ssh.HostKeyError, "ssh-keyscan -p 2222 10.0.0.7 >> /tmp/kh"),
    ("ssh: connect to host 10.0.0.7 port 2222: Connection refused\n", ssh.SshError, "refused"),
    ("Connection to 10.0.0.7 closed by remote host.\n", ssh.ConnectionLostError, "dropped"),
    ("Timeout, server 10.0.0.7 not responding.\n", ssh.ConnectionLostError, "dropped"),
    ("pi@10.0.0.7: Permission denied (publickey).\n", ssh.SshError, "ssh-copy-id"),
    ("ssh: connect to host 10.0.0.7 port 2222: No route to host\n", ssh.SshError, "unreachable"),
])
def test_classify_ssh_failure(stderr, cls, words):
    err = ssh.classify_ssh_failure(_target(), 255, stderr, "the probe")
    assert type(err) is cls and words in str(err) and "\n" not in str(err)


def test_runtime_bundle_is_the_runtime_package(tmp_path):
    pkg = ssh.stage_runtime(tmp_path)
    names = {p.name for p in pkg.iterdir()}
    assert {"__init__.py", "runners.py", "timing.py", "device_main.py"} <= names
    assert len(ssh.runtime_digest()) == 16
    # The shipped package imports nothing of edgekit: it runs under another name.
    for p in pkg.glob("*.py"):
        text = p.read_text()
        assert "import edgekit" not in text and "from edgekit" not in text and "from .." not in text


def test_shipped_package_runs_on_its_own(tmp_path):
    ssh.stage_runtime(tmp_path)
    done = subprocess.run([sys.executable, "-m", "edgekit_runtime.device_main", "--describe", "--cpus", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ok"] and out["affinity"] == [0] and "numpy" in out["runtime_versions"]
    # Nothing of the edgekit package was imported by the device side.
    check = subprocess.run([sys.executable, "-c", "import sys, edgekit_runtime.device_main; "
                            "print(any(m == 'edgekit' or m.startswith('edgekit.') for m in sys.modules))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "False"


# --------------------------------------------------------------------------- device_main


def test_device_main_reports_errors_as_json(tmp_path, capsys):
    assert device_main.main([str(tmp_path / "missing.onnx")]) == device_main.ERROR_EXIT
    out = json.loads(capsys.readouterr().out)
    assert out == {"ok": False, "protocol": 1, "kind": "bad_artifact",
                   "error": f"{tmp_path / 'missing.onnx'}: no such artifact file on the device"}
    f = tmp_path / "a.onnx"
    f.write_bytes(b"not a model")
    assert device_main.main([str(f), "--expect-sha256", "0" * 64]) == device_main.ERROR_EXIT
    assert json.loads(capsys.readouterr().out)["kind"] == "hash_mismatch"
    assert device_main.main([str(f), "--cpus", "0-x"]) == device_main.ERROR_EXIT
    assert json.loads(capsys.readouterr().out)["kind"] == "usage"


def test_device_main_reads_raw_cpufreq(tmp_path):
    for cpu, gov, cur in ((0, "performance", "2400000"), (1, "ondemand", "1500000")):
        d = tmp_path / f"cpu{cpu}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
        (d / "scaling_cur_freq").write_text(cur + "\n")
        (d / "cpuinfo_max_freq").write_text("2400000\n")
    raw = device_main.raw_cpufreq([0, 1, 2], root=str(tmp_path))
    assert raw["0/scaling_governor"] == "performance" and raw["1/scaling_cur_freq"] == "1500000"
    assert not any(k.startswith("2/") for k in raw)
    state = sysinfo.cpu_state_from_raw(raw)
    assert state == {"governor": {"0": "performance", "1": "ondemand"}, "cur_mhz": {"0": 2400, "1": 1500},
                     "hw_max_mhz": {"0": 2400, "1": 2400}}
    assert sysinfo.read_cpu_state([0, 1], root=str(tmp_path)) == state
    assert device_main.CPUFREQ_FILES == sysinfo.CPUFREQ_FILES


# --------------------------------------------------------------------------- sysinfo


def test_cpu_lists_and_masks():
    assert sysinfo.parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    assert sysinfo.format_cpu_list([6, 0, 1, 2, 3]) == "0-3,6"
    assert sysinfo.taskset_mask([4, 5, 6, 7]) == "f0" and sysinfo.taskset_mask([0]) == "1"
    with pytest.raises(ValueError):
        sysinfo.parse_cpu_list("3-1")


def test_conditions_warnings():
    steady = {"governor": {"0": "performance"}, "cur_mhz": {"0": 2400}, "hw_max_mhz": {"0": 2400}}
    assert sysinfo.conditions_warnings(steady, steady, [0]) == []
    throttled = {"governor": {"0": "performance"}, "cur_mhz": {"0": 1500}}
    assert "fell from 2400 to 1500 MHz" in sysinfo.conditions_warnings(steady, throttled, [0])[0]
    lazy = {"governor": {"0": "powersave"}, "cur_mhz": {"0": 600}}
    assert "powersave" in sysinfo.conditions_warnings(lazy, lazy)[0]
    assert "unknown" in sysinfo.conditions_warnings({}, {})[0]


# --------------------------------------------------------------------------- measurements


def _m(**kw) -> Measurement:
    args = dict(device="rpi5", artifact="a.onnx", artifact_sha256="a" * 64, format="onnx", via="ssh",
                tool="edgekit-runtime", stats={"median_ms": 10.0, "trimmed_mean_ms": 10.2, "p10_ms": 9.0,
                                               "p90_ms": 12.0}, runs=30, warmup=5, threads=4, affinity=(0, 1, 2, 3))
    args.update(kw)
    return Measurement(**args)


def test_measurement_validation():
    with pytest.raises(ValueError, match="64 lower-case hex"):
        _m(artifact_sha256="abc")
    with pytest.raises(ValueError, match="unknown latency statistic"):
        _m(stats={"median_ms": 1.0, "fastest": 0.1})
    with pytest.raises(ValueError, match="at least one of"):
        _m(stats={"p90_ms": 1.0})
    m = _m()
    assert m.headline_ms == 10.2 and m.headline_name == "trimmed mean"
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_store_round_trip_keeps_history_per_conditions(tmp_path):
    store = MeasurementStore(tmp_path / "sub" / "m.json")
    assert store.load() == []
    old = _m(measured_at=1.0)
    other_threads = _m(threads=1, affinity=(0,), measured_at=2.0)
    new = _m(measured_at=3.0, stats={"median_ms": 11.0})
    for m in (old, other_threads, new):
        store.add(m)
    assert store.find("a" * 64, "rpi5") == [new, other_threads, old]
    assert store.previous(new) == [old]
    assert store.find(device="pixel7") == []
    for i in range(measurements.KEEP_PER_KEY + 3):
        store.add(_m(measured_at=10.0 + i))
    same = [m for m in store.load() if m.key() == old.key()]
    assert len(same) == measurements.KEEP_PER_KEY


def test_store_refuses_a_foreign_file(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"schema": "something/else", "measurements": []}))
    with pytest.raises(FormatError, match="expected 'edgekit.measurements/1'"):
        MeasurementStore(p).load()
    p.write_text("{")
    with pytest.raises(FormatError, match="not valid JSON"):
        MeasurementStore(p).load()


def test_artifact_info_checks_the_manifest(tmp_path):
    a = tmp_path / "m.onnx"
    a.write_bytes(b"model bytes")
    info = artifact_info(a)
    assert info.manifest_path is None and info.format == "onnx" and len(info.sha256) == 64
    (tmp_path / "manifest.json").write_text(json.dumps({"artifact": {"sha256": info.sha256}}))
    assert artifact_info(a).manifest_path == tmp_path / "manifest.json"
    (tmp_path / "manifest.json").write_text(json.dumps({"artifact": {"sha256": "0" * 64}}))
    with pytest.raises(FormatError, match="does not match .* in manifest.json"):
        artifact_info(a)
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(FormatError, match="declares no sha256"):
        artifact_info(a)
    # The layout edgekit export writes: one manifest per folder, an entry per artifact.
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"edgekit_manifest": 1, "artifacts": {"m.onnx": {"sha256": info.sha256, "dtype": "fp32"}}}))
    assert artifact_info(a).manifest == {"sha256": info.sha256, "dtype": "fp32"}
    (tmp_path / "manifest.json").write_text(json.dumps({"edgekit_manifest": 1, "artifacts": {"other.onnx": {}}}))
    assert artifact_info(a).manifest_path is None
    with pytest.raises(FormatError, match="unknown artifact suffix"):
        (tmp_path / "x.bin").write_bytes(b"")
        artifact_info(tmp_path / "x.bin")
