"""Benchmark a tiny artifact through a real OpenSSH server on 127.0.0.1, exactly as on a Pi.

The server runs as the current user with a temporary host key, user key and sshd_config on a
free high port; the "remote" python is this machine's python (numpy + onnxruntime). Failure
cases: a wrong host key, an unknown host, a refused and a dropped connection, a missing
runtime, a missing python and a timeout each give one-line errors and record nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.devices import ssh
from edgekit.devices.measurements import MeasurementStore, sha256_file

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="OpenSSH server/client not installed (scripts/install-test-deps.sh installs openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        _keygen(root / "host_key")
        _keygen(root / "user_key")
        shutil.copy(root / "user_key.pub", root / "authorized_keys")
        host_pub = (root / "host_key.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "Subsystem sftp internal-sftp",
            "LogLevel ERROR", ""]))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.log = open(self.root / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start listening within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def target(self, tmp: Path, **kw) -> ssh.SshTarget:
        args = dict(port=self.port, identity=str(self.root / "user_key"), known_hosts=str(self.known_hosts),
                    ssh_config="none", remote_python=sys.executable, remote_dir=str(tmp / "remote"),
                    connect_timeout_s=5)
        args.update(kw)
        return ssh.SshTarget(f"{os.environ.get('USER') or 'root'}@127.0.0.1", **args)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("sshd"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    """What the CLI reads to reach the test server: its known_hosts, no user ssh config, this
    machine's python as the device's, and a per-test remote directory."""
    values = {"EDGEKIT_SSH_KNOWN_HOSTS": str(server.known_hosts), "EDGEKIT_SSH_CONFIG": "none",
              "EDGEKIT_REMOTE_PYTHON": sys.executable, "EDGEKIT_REMOTE_DIR": str(tmp_path / "remote")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def remote_args(server) -> list[str]:
    return ["--host", "root@127.0.0.1", "--port", str(server.port), "--identity", str(server.root / "user_key")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A tiny HuBERT exported to ONNX with a manifest carrying its sha256."""
    import torch

    from edgekit.zoo import create_model

    model = create_model("tiny-hubert", seed=0)
    model.prepare_for_export()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).last_hidden_state

    out = tmp_path_factory.mktemp("artifact") / "tiny-hubert.onnx"
    torch.onnx.export(Hidden(model).eval(), (torch.randn(1, 4000),), str(out), dynamo=False, opset_version=17,
                      input_names=["wave"])
    # The manifest layout edgekit export writes (edgekit.export.manifest).
    entry = {"artifact": out.name, "format": "onnx", "dtype": "fp32", "arch": model.spec.to_dict(),
             "input": {"name": "wave", "sample_rate": 16000, "samples": 4000, "seconds": 0.25},
             "sha256": sha256_file(out)}
    (out.parent / "manifest.json").write_text(json.dumps({"edgekit_manifest": 1, "artifacts": {out.name: entry}}))
    return out


def _fake_python(tmp: Path, body: str) -> str:
    """A stand-in for the device's python: a shell script in place of the interpreter."""
    p = tmp / "fake-python"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_bench_over_ssh_measures_and_records(server, artifact, tmp_path):
    store = MeasurementStore(tmp_path / "m.json")
    target = server.target(tmp_path)
    m = ssh.bench_over_ssh(artifact, "rpi5", target, runs=5, warmup=1, threads=1, cpus=[0], store=store)
    assert m.device == "rpi5" and m.via == "ssh" and m.format == "onnx"
    assert m.artifact_sha256 == sha256_file(artifact)
    assert m.runs == 5 and m.warmup == 1 and m.threads == 1 and m.affinity == (0,)
    s = m.stats
    assert 0 < s["min_ms"] <= s["p10_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["max_ms"]
    assert m.load_ms and m.load_ms > 0 and m.peak_rss_mb and m.peak_rss_mb > 0
    assert m.runtime_versions["onnxruntime"] and m.system["hostname"]
    # The device ran the shipped copy, not this checkout: the runtime sits in the remote dir.
    remote = tmp_path / "remote"
    rt_dirs = list(remote.glob("runtime-*/edgekit_runtime/device_main.py"))
    assert len(rt_dirs) == 1
    assert (remote / "artifacts" / f"{m.artifact_sha256}.onnx").is_file()
    assert not list(remote.rglob("*.part"))
    # Recorded, and found again by artifact and device.
    assert store.find(m.artifact_sha256, "rpi5") == [m]

    # A second run reuses both copies (no scp) and is filed next to the first.
    m2 = ssh.bench_over_ssh(artifact, "rpi5", target, runs=3, warmup=0, threads=1, cpus=[0], store=store)
    assert store.previous(m2) == [m]


def test_wrong_host_key_is_refused_and_records_nothing(server, artifact, tmp_path):
    other = tmp_path / "other_key"
    _keygen(other)
    pub = (tmp_path / "other_key.pub").read_text().split()
    kh = tmp_path / "known_hosts_wrong"
    kh.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    store = MeasurementStore(tmp_path / "m.json")
    with pytest.raises(ssh.HostKeyError) as e:
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, known_hosts=str(kh)), runs=2, threads=1,
                           cpus=[0], store=store)
    msg = str(e.value)
    assert "does not match" in msg and "\n" not in msg and str(kh) in msg
    assert not store.path.exists()


def test_unknown_host_is_refused(server, artifact, tmp_path):
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    with pytest.raises(ssh.HostKeyError, match="is not in .*ssh-keyscan -p"):
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, known_hosts=str(kh)), runs=2, threads=1,
                           cpus=[0], record=False)


def test_missing_runtime_on_the_device(server, artifact, tmp_path):
    # onnxruntime shadowed by a package that fails to import, as on a device without it.
    shadow = tmp_path / "shadow" / "onnxruntime"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    py = _fake_python(tmp_path, f'PYTHONPATH={shadow.parent} exec {sys.executable} "$@"')
    store = MeasurementStore(tmp_path / "m.json")
    with pytest.raises(ssh.RemoteRuntimeError, match="onnxruntime is not installed.*install.sh") as e:
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, remote_python=py), runs=2, threads=1,
                           cpus=[0], store=store)
    assert "\n" not in str(e.value)
    assert not store.path.exists()


def test_missing_python_on_the_device(server, artifact, tmp_path):
    with pytest.raises(ssh.RemoteRuntimeError, match="no python at .*install.sh"):
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, remote_python="/nonexistent/python3"),
                           runs=2, threads=1, cpus=[0], record=False)


def test_timeout_on_the_device(server, artifact, tmp_path):
    py = _fake_python(tmp_path, "sleep 30")
    store = MeasurementStore(tmp_path / "m.json")
    t0 = time.monotonic()
    with pytest.raises(ssh.RemoteTimeoutError, match="did not finish within 2 s"):
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, remote_python=py), runs=2, threads=1,
                           cpus=[0], timeout_s=2, store=store)
    assert time.monotonic() - t0 < 25  # bounded by the remote timeout, not the 30 s sleep
    assert not store.path.exists()


def test_dropped_connection(server, artifact, tmp_path):
    # The device's python kills the sshd process serving this session: the TCP connection
    # goes away mid-run, as when a Pi loses power or Wi-Fi.
    killer = tmp_path / "killer.py"
    killer.write_text(
        "import os, signal\n"
        "pid = os.getppid()\n"
        "while pid > 1:\n"
        "    comm = open(f'/proc/{pid}/comm').read().strip()\n"
        "    if comm.startswith('sshd'):\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        break\n"
        "    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n")
    py = _fake_python(tmp_path, f"exec {sys.executable} {killer}")
    store = MeasurementStore(tmp_path / "m.json")
    with pytest.raises(ssh.ConnectionLostError, match="dropped|killed") as e:
        ssh.bench_over_ssh(artifact, "rpi5", server.target(tmp_path, remote_python=py), runs=2, threads=1,
                           cpus=[0], store=store)
    assert "\n" not in str(e.value)
    assert not store.path.exists()


def test_refused_connection(artifact, tmp_path):
    target = ssh.SshTarget("root@127.0.0.1", port=_free_port(), ssh_config="none",
                           known_hosts=str(tmp_path / "kh"), connect_timeout_s=5)
    with pytest.raises(ssh.SshError, match="refused during the probe"):
        ssh.bench_over_ssh(artifact, "rpi5", target, runs=2, threads=1, cpus=[0], record=False)


def test_connection_protocol_for_profile(server, artifact, tmp_path):
    conn = ssh.SshConnection(device=None, target=server.target(tmp_path))
    stats = conn.time_artifact(str(artifact), warmup=1, runs=3, threads=1)
    assert stats.n == 3 and stats.median_ms > 0 and stats.threads == 1
    env = conn.environment()
    assert env["hostname"] and "onnxruntime" in env["runtime_versions"] and env["affinity"]
