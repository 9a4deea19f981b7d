"""Benchmark an artifact on a Raspberry Pi (or any Linux box) over SSH.

The system `ssh` and `scp` do the work, so users keep their keys, agents and ~/.ssh/config,
and edgekit adds no dependency. Every call runs with BatchMode (never prompts),
StrictHostKeyChecking=yes (an unknown or changed host key is refused, never silently
accepted; the known_hosts file is the user's, or one given by `known_hosts` /
$EDGEKIT_SSH_KNOWN_HOSTS), a connect timeout and keep-alives, and a local wall-clock limit.

One measurement is three short SSH sessions:
1. probe: is the remote python there, is this version of the runtime code there, is the
   artifact there with the right sha256 (`sha256sum` on the device);
2. copy with scp what is missing (the runtime package as `edgekit_runtime`, the artifact under
   its sha256), to `.part` names moved into place by step 3, so an interrupted copy is never
   mistaken for a complete one;
3. run `edgekit_runtime.device_main` under the remote `timeout`, which prints one JSON line.

Failures become one-line UserErrors naming the cause (wrong or unknown host key, refused or
dropped connection, missing python or runtime, timeout) and nothing is recorded locally.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from . import sysinfo
from .measurements import ArtifactInfo, Measurement, MeasurementStore, artifact_info

# install.sh creates this virtual environment; relative paths are under the remote home.
DEFAULT_REMOTE_PYTHON = "edgekit/venv/bin/python"
DEFAULT_REMOTE_DIR = "edgekit"
REMOTE_PACKAGE = "edgekit_runtime"
DEFAULT_TIMEOUT_S = 600.0


class SshError(UserError):
    """Reaching or using the remote device failed; one line saying why and what to do."""


class HostKeyError(SshError):
    pass


class ConnectionLostError(SshError):
    pass


class RemoteTimeoutError(SshError):
    pass


class RemoteRuntimeError(SshError):
    """The remote python, numpy or the artifact's runtime is missing on the device."""


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class SshTarget:
    """How to reach one device. `host` is `user@address` or `address`."""

    host: str
    port: int = 22
    identity: str | None = None  # private key file; None = ssh's defaults and agent
    known_hosts: str | None = None  # None = $EDGEKIT_SSH_KNOWN_HOSTS, else the user's
    ssh_config: str | None = None  # None = $EDGEKIT_SSH_CONFIG, else ~/.ssh/config; "none" = ignore
    remote_python: str = DEFAULT_REMOTE_PYTHON
    remote_dir: str = DEFAULT_REMOTE_DIR
    connect_timeout_s: int = 10

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._:\[\]-]+", self.host or "") or self.host.startswith("-"):
            raise UserError(f"--host {self.host!r} is not a host; expected user@address, e.g. pi@192.168.1.20")
        if not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise UserError(f"--port {self.port!r} is not a TCP port; expected 1..65535")
        if self.identity is not None and not os.path.isfile(self.identity):
            raise UserError(f"--identity {self.identity}: no such key file; give the private key, e.g. ~/.ssh/id_ed25519")
        for name in ("remote_python", "remote_dir"):
            v = getattr(self, name)
            if not v or "\n" in v or v.startswith("~") and not v.startswith("~/"):
                raise UserError(f"{name}={v!r}: expected an absolute path or one relative to the remote home")
            if v.startswith("~/"):
                object.__setattr__(self, name, v[2:])
        if not (isinstance(self.connect_timeout_s, int) and self.connect_timeout_s > 0):
            raise UserError(f"connect_timeout_s={self.connect_timeout_s!r}: expected a positive integer")

    @classmethod
    def from_env(cls, host: str, **kwargs: Any) -> "SshTarget":
        """Fill known_hosts / ssh_config / remote_python from $EDGEKIT_SSH_* when not given."""
        env = {"known_hosts": "EDGEKIT_SSH_KNOWN_HOSTS", "ssh_config": "EDGEKIT_SSH_CONFIG",
               "remote_python": "EDGEKIT_REMOTE_PYTHON", "remote_dir": "EDGEKIT_REMOTE_DIR"}
        for field_name, var in env.items():
            if kwargs.get(field_name) is None and os.environ.get(var):
                kwargs[field_name] = os.environ[var]
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return cls(host=host, **kwargs)

    @property
    def address(self) -> str:
        return self.host.rsplit("@", 1)[-1]

    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.port != 22 else self.host

    def _known_hosts(self) -> str | None:
        return self.known_hosts or os.environ.get("EDGEKIT_SSH_KNOWN_HOSTS") or None

    def common_options(self) -> list[str]:
        """Options shared by ssh and scp."""
        opts: list[str] = []
        config = self.ssh_config or os.environ.get("EDGEKIT_SSH_CONFIG")
        if config:
            opts += ["-F", config]
        opts += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                 "-o", f"ConnectTimeout={self.connect_timeout_s}",
                 # A silent peer (Pi unplugged, Wi-Fi gone) is noticed within 15 s.
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                 "-o", "LogLevel=ERROR"]
        kh = self._known_hosts()
        if kh:
            opts += ["-o", f"UserKnownHostsFile={kh}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity:
            opts += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return opts

    def ssh_argv(self, remote_command: str) -> list[str]:
        return ["ssh", *self.common_options(), "-p", str(self.port), "-T", self.host, remote_command]

    def scp_argv(self, sources: Sequence[str], remote_path: str) -> list[str]:
        return ["scp", *self.common_options(), "-q", "-r", "-P", str(self.port), *sources,
                f"{self.host}:{remote_path}"]


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_bounded(argv: Sequence[str], timeout_s: float, what: str) -> Completed:
    """Run a local command with a wall-clock limit; on expiry kill its whole process group.

    Raises RemoteTimeoutError naming `what`, or UserError when the program is not installed."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        raise UserError(f"{argv[0]} is not installed or not on PATH; it is needed to {what}") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with _suppress_lookup():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RemoteTimeoutError(f"{what} did not finish within {timeout_s:g} s and was stopped; "
                                 "raise --timeout for a slow device or a large model") from None
    return Completed(proc.returncode, out, err)


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, ProcessLookupError)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not set(ln.strip()) <= {"@"}]
    return lines[-1] if lines else ""


def classify_ssh_failure(target: SshTarget, returncode: int, stderr: str, stage: str) -> SshError:
    """ssh/scp stderr -> the one-line error a user can act on."""
    kh = target._known_hosts() or "~/.ssh/known_hosts"
    keyscan = f"ssh-keyscan{' -p ' + str(target.port) if target.port != 22 else ''} {target.address}"
    where = target.where()
    entry = target.address if target.port == 22 else f"'[{target.address}]:{target.port}'"
    remove = f"ssh-keygen{' -f ' + kh if target._known_hosts() else ''} -R {entry}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key for" in stderr and "has changed" in stderr:
        return HostKeyError(f"the host key of {where} does not match the one recorded in {kh}; if the device was "
                            f"reinstalled, check its new key and replace the old one ({remove}), "
                            "otherwise do not connect")
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        return HostKeyError(f"{where} is not in {kh}; check the device's key and add it ({keyscan} >> {kh}), "
                            "or connect once with ssh to accept it")
    if "Permission denied" in stderr:
        return SshError(f"{where} refused the login ({_last_line(stderr)}); install your public key on the device "
                        "(ssh-copy-id) or pass --identity KEY")
    if "Connection refused" in stderr:
        return SshError(f"connection to {where} refused during {stage}; is sshd running on the device and is "
                        "--port right?")
    if "Could not resolve hostname" in stderr:
        return SshError(f"cannot resolve {target.address}; check the address given with --host")
    if re.search(r"Connection timed out|Operation timed out|No route to host|Network is unreachable", stderr):
        return SshError(f"{where} is unreachable ({_last_line(stderr)}) during {stage}; check that the device is "
                        "on and on the same network")
    if re.search(r"closed by remote host|Connection reset|Broken pipe|Timeout, server .* not responding|"
                 r"lost connection|Connection closed|client_loop", stderr) or (returncode == 255 and not stderr.strip()):
        return ConnectionLostError(f"the connection to {where} dropped during {stage} "
                                   f"({_last_line(stderr) or 'no message'}); nothing was recorded, run it again")
    return SshError(f"ssh to {where} failed during {stage} (exit {returncode}: "
                    f"{_last_line(stderr) or 'no message'})")


def _q(path: str) -> str:
    """A remote path for the shell: absolute as is, relative under "$HOME"."""
    return shlex.quote(path) if path.startswith("/") else '"$HOME"/' + shlex.quote(path)


# --------------------------------------------------------------------------- the bundle


def runtime_source_dir() -> Path:
    from .. import runtime

    return Path(runtime.__file__).parent


def runtime_files() -> list[Path]:
    return sorted(p for p in runtime_source_dir().glob("*.py"))


def runtime_digest() -> str:
    """Content hash of the runtime package: a new edgekit version gets a fresh remote copy."""
    h = hashlib.sha256()
    for p in runtime_files():
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def stage_runtime(dest: Path) -> Path:
    """Copy the runtime package to dest/edgekit_runtime (what goes to the device)."""
    pkg = dest / REMOTE_PACKAGE
    pkg.mkdir(parents=True)
    for p in runtime_files():
        shutil.copy2(p, pkg / p.name)
    return pkg


# --------------------------------------------------------------------------- the measurement


@dataclass(frozen=True)
class RemotePlan:
    """Remote paths for one artifact on one target (relative paths are under the remote home)."""

    runtime_dir: str
    artifact_path: str

    @classmethod
    def for_artifact(cls, target: SshTarget, info: ArtifactInfo) -> "RemotePlan":
        base = target.remote_dir.rstrip("/")
        return cls(runtime_dir=f"{base}/runtime-{runtime_digest()}",
                   artifact_path=f"{base}/artifacts/{info.sha256}{info.path.suffix}")


def probe_script(target: SshTarget, plan: RemotePlan) -> str:
    py, rt, art = _q(target.remote_python), _q(plan.runtime_dir), _q(plan.artifact_path)
    return "; ".join([
        f"if [ -x {py} ] || command -v {py} >/dev/null 2>&1; then echo 'python ok'; else echo 'python missing'; fi",
        f"if [ -f {rt}/{REMOTE_PACKAGE}/device_main.py ]; then echo 'runtime present'; else echo 'runtime absent'; fi",
        f"if [ -f {art} ]; then echo \"artifact $(sha256sum {art} | cut -d' ' -f1)\"; else echo 'artifact absent'; fi",
        f"mkdir -p {_q(os.path.dirname(plan.runtime_dir) or '.')} {_q(os.path.dirname(plan.artifact_path))}",
        # Leftovers of an interrupted copy would make scp nest the next copy inside them.
        f"rm -rf {_q(plan.runtime_dir + '.part')} {_q(plan.artifact_path + '.part')}",
        "echo probe-done",
    ])


def install_steps(plan_runtime_dir: str, need_runtime: bool, artifact_path: str | None = None) -> list[str]:
    """Shell steps that move fresh `.part` copies into place (scp of a directory to a path
    that does not exist creates that path as the copy, hence the package rename)."""
    steps = []
    if need_runtime:
        rt = _q(plan_runtime_dir)
        steps.append(f"rm -rf {rt} && mkdir -p {rt} && mv {_q(plan_runtime_dir + '.part')} {rt}/{REMOTE_PACKAGE}")
    if artifact_path is not None:
        steps.append(f"mv -f {_q(artifact_path + '.part')} {_q(artifact_path)}")
    return steps


def run_command(target: SshTarget, plan: RemotePlan, *, runs: int, warmup: int, threads: int | None,
                cpus: Sequence[int], expect_sha256: str, timeout_s: float, need_runtime: bool,
                need_artifact: bool, keep_artifact: bool = True) -> str:
    """The remote shell command of step 3: move fresh copies into place, then run bounded.
    Without `keep_artifact` the artifact is removed afterwards (profiling sends hundreds)."""
    steps = install_steps(plan.runtime_dir, need_runtime, plan.artifact_path if need_artifact else None)
    args = [f"--runs {int(runs)}", f"--warmup {int(warmup)}", f"--expect-sha256 {expect_sha256}"]
    if threads is not None:
        args.append(f"--threads {int(threads)}")
    if cpus:
        args.append(f"--cpus {sysinfo.format_cpu_list(cpus)}")
    # The device's own `timeout` bounds the run even if this side loses the connection.
    run = (f"cd {_q(plan.runtime_dir)} && {'exec ' if keep_artifact else ''}timeout -k 5 {max(1, int(timeout_s))} "
           f"{_q(target.remote_python)} -m {REMOTE_PACKAGE}.device_main {_q(plan.artifact_path)} " + " ".join(args))
    steps.append(run)
    if keep_artifact:
        return " && ".join(steps)
    return " && ".join(steps) + f"; rc=$?; rm -f {_q(plan.artifact_path)}; exit $rc"


def _parse_probe(stdout: str) -> dict[str, str]:
    facts = {}
    for line in stdout.splitlines():
        key, _, value = line.strip().partition(" ")
        if key in ("python", "runtime", "artifact"):
            facts[key] = value.strip()
    if "probe-done" not in stdout:
        raise ConnectionLostError("the device did not finish the probe (no completion marker); "
                                  "the connection may have dropped, run it again")
    return facts


def _device_result(target: SshTarget, done: Completed, timeout_s: float) -> dict:
    """Parse device_main's JSON line, or explain why there is none."""
    lines = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("{")]
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if isinstance(result, dict) and result.get("protocol") == 1:
        if result.get("ok") is True:
            return result
        kind, msg = result.get("kind"), result.get("error", "no message")
        if kind == "missing_runtime":
            raise RemoteRuntimeError(f"on {target.where()}: {msg} in the device's python "
                                     f"({target.remote_python}); run targets/raspberrypi/install.sh on the device")
        raise SshError(f"the device reported: {msg}")
    if done.returncode == 124:
        raise RemoteTimeoutError(f"the benchmark on {target.where()} did not finish within {timeout_s:g} s and "
                                 "was stopped on the device; raise --timeout or use fewer --runs")
    if done.returncode == 255:
        raise classify_ssh_failure(target, done.returncode, done.stderr, "the benchmark run")
    missing = re.search(r"No module named '([\w.]+)'", done.stderr)
    if missing:
        raise RemoteRuntimeError(f"{missing.group(1)} is not installed in the device's python "
                                 f"({target.remote_python}) on {target.where()}; run targets/raspberrypi/install.sh "
                                 "on the device")
    if done.returncode == 127:
        raise RemoteRuntimeError(f"a program is missing on {target.where()} ({_last_line(done.stderr)}); "
                                 "the device needs python3 and coreutils' timeout")
    if done.returncode < 0 or done.returncode in (137, 143):
        raise ConnectionLostError(f"the benchmark on {target.where()} was killed (exit {done.returncode}); "
                                  "nothing was recorded, run it again")
    raise SshError(f"the device returned no result (exit {done.returncode}: "
                   f"{_last_line(done.stderr) or _last_line(done.stdout) or 'no output'})")


def run_on_device(target: SshTarget, artifact: str | os.PathLike, *, runs: int = 30, warmup: int = 5,
                  threads: int | None = None, cpus: Sequence[int] = (), timeout_s: float = DEFAULT_TIMEOUT_S,
                  info: ArtifactInfo | None = None, keep_artifact: bool = True) -> tuple[ArtifactInfo, dict]:
    """Copy what is missing, run device_main, return (artifact info, the device's JSON result)."""
    if runs < 1 or warmup < 0:
        raise UserError(f"--runs {runs} / warmup {warmup}: expected runs >= 1 and warmup >= 0")
    info = info or artifact_info(artifact)
    plan = RemotePlan.for_artifact(target, info)
    # Connection setup counts against the copy/probe limits, not the benchmark's.
    short = float(target.connect_timeout_s) + 30.0

    probe = run_bounded(target.ssh_argv(probe_script(target, plan)), short, f"the probe of {target.where()}")
    if probe.returncode != 0:
        raise classify_ssh_failure(target, probe.returncode, probe.stderr, "the probe")
    facts = _parse_probe(probe.stdout)
    if facts.get("python") != "ok":
        raise RemoteRuntimeError(f"no python at {target.remote_python} on {target.where()}; run "
                                 "targets/raspberrypi/install.sh on the device, or point EDGEKIT_REMOTE_PYTHON at one")

    need_runtime = facts.get("runtime") != "present"
    need_artifact = facts.get("artifact") != info.sha256
    with tempfile.TemporaryDirectory(prefix="edgekit-ssh-") as tmp:
        if need_runtime:
            staged = stage_runtime(Path(tmp) / "rt")
            copy_s = short + 60.0
            done = run_bounded(target.scp_argv([str(staged)], plan.runtime_dir + ".part"), copy_s,
                               f"copying the runtime to {target.where()}")
            if done.returncode != 0:
                raise classify_ssh_failure(target, done.returncode, done.stderr, "the copy of the runtime")
        if need_artifact:
            # Rough bound: 1 MB/s is a slow Wi-Fi link.
            copy_s = short + info.path.stat().st_size / 1e6
            done = run_bounded(target.scp_argv([str(info.path)], plan.artifact_path + ".part"), copy_s,
                               f"copying {info.name} to {target.where()}")
            if done.returncode != 0:
                raise classify_ssh_failure(target, done.returncode, done.stderr, f"the copy of {info.name}")

    cmd = run_command(target, plan, runs=runs, warmup=warmup, threads=threads, cpus=cpus,
                      expect_sha256=info.sha256, timeout_s=timeout_s, need_runtime=need_runtime,
                      need_artifact=need_artifact, keep_artifact=keep_artifact)
    done = run_bounded(target.ssh_argv(cmd), timeout_s + short, f"the benchmark on {target.where()}")
    result = _device_result(target, done, timeout_s)
    if result.get("sha256") != info.sha256:
        raise SshError(f"the device timed a file with sha256 {str(result.get('sha256'))[:12]}…, expected "
                       f"{info.sha256[:12]}…; nothing was recorded, run it again")
    return info, result


def measurement_from_result(device: str, address: str, info: ArtifactInfo, result: dict, runs: int, warmup: int,
                            via: str = "ssh") -> Measurement:
    """device_main's JSON result (from a Pi, or run in-process for the host) -> Measurement."""
    stats_in = result.get("stats") or {}
    keys = ("mean_ms", "median_ms", "trimmed_mean_ms", "p10_ms", "p90_ms", "std_ms", "min_ms", "max_ms")
    stats = {k: float(stats_in[k]) for k in keys if isinstance(stats_in.get(k), (int, float))}
    affinity = [int(c) for c in result.get("affinity") or []]
    before = sysinfo.cpu_state_from_raw(result.get("cpufreq_before") or {})
    after = sysinfo.cpu_state_from_raw(result.get("cpufreq_after") or {})
    warnings = sysinfo.conditions_warnings(before, after, affinity)
    if info.manifest_path is None:
        warnings.append("no manifest.json next to the artifact; identified by its sha256 only")
    return Measurement(device=device, artifact=info.name, artifact_sha256=info.sha256, format=info.format,
                       tool="edgekit-runtime", stats=stats, runs=int(stats_in.get("n", runs)),
                       warmup=int(stats_in.get("warmup", warmup)), threads=result.get("threads"),
                       affinity=tuple(affinity), load_ms=stats_in.get("load_ms"),
                       peak_rss_mb=stats_in.get("peak_rss_mb"), before=before, after=after,
                       system=result.get("system") or {}, runtime_versions=result.get("runtime_versions") or {},
                       warnings=tuple(warnings), address=address, via=via)


def bench_over_ssh(artifact: str | os.PathLike, device: str, target: SshTarget, *, runs: int = 30,
                   warmup: int = 5, threads: int | None = None, cpus: Sequence[int] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S, store: MeasurementStore | None = None,
                   record: bool = True) -> Measurement:
    """Benchmark `artifact` on `device` reached at `target`; record it in `store` when it succeeds.

    `cpus` default: the device's registered affinity (the Pi's four cores); `threads` default:
    its default thread count."""
    threads, cpus = _device_defaults(device, threads, cpus)
    info, result = run_on_device(target, artifact, runs=runs, warmup=warmup, threads=threads, cpus=cpus,
                                 timeout_s=timeout_s)
    m = measurement_from_result(device, target.where(), info, result, runs, warmup)
    if record:
        (store or MeasurementStore()).add(m)
    return m


def _device_defaults(device: str, threads: int | None, cpus: Sequence[int] | None) -> tuple[int | None, list[int]]:
    try:
        from .registry import get_device

        dev = get_device(device)
    except UserError:
        return threads, list(cpus or [])
    return (threads if threads is not None else dev.default_threads,
            list(cpus) if cpus is not None else list(dev.affinity))


def describe_over_ssh(target: SshTarget, timeout_s: float = 60.0, cpus: Sequence[int] = ()) -> dict:
    """Device facts (system, cpu state, runtime versions) without timing anything."""
    short = float(target.connect_timeout_s) + 30.0
    with tempfile.TemporaryDirectory(prefix="edgekit-ssh-") as tmp:
        rt = f"{target.remote_dir.rstrip('/')}/runtime-{runtime_digest()}"
        probe = run_bounded(target.ssh_argv(
            f"if [ -f {_q(rt)}/{REMOTE_PACKAGE}/device_main.py ]; then echo present; else "
            f"mkdir -p {_q(os.path.dirname(rt) or '.')} && rm -rf {_q(rt + '.part')}; echo absent; fi"), short, f"the probe of {target.where()}")
        if probe.returncode != 0:
            raise classify_ssh_failure(target, probe.returncode, probe.stderr, "the probe")
        prefix = ""
        if "present" not in probe.stdout.split():
            staged = stage_runtime(Path(tmp) / "rt")
            done = run_bounded(target.scp_argv([str(staged)], rt + ".part"), short + 60.0,
                               f"copying the runtime to {target.where()}")
            if done.returncode != 0:
                raise classify_ssh_failure(target, done.returncode, done.stderr, "the copy of the runtime")
            prefix = install_steps(rt, True)[0] + " && "
    cmd = (prefix + f"cd {_q(rt)} && exec timeout -k 5 {int(timeout_s)} {_q(target.remote_python)} "
           f"-m {REMOTE_PACKAGE}.device_main --describe"
           + (f" --cpus {sysinfo.format_cpu_list(cpus)}" if cpus else ""))
    done = run_bounded(target.ssh_argv(cmd), timeout_s + short, f"reading the facts of {target.where()}")
    result = _device_result(target, done, timeout_s)
    state = sysinfo.cpu_state_from_raw(result.get("cpufreq") or {})
    return {**(result.get("system") or {}), "affinity": result.get("affinity") or [],
            "governor": state.get("governor"), "cur_mhz": state.get("cur_mhz"), "max_mhz": state.get("max_mhz"),
            "runtime_versions": result.get("runtime_versions") or {}}


# --------------------------------------------------------------------------- Connection


class SshConnection:
    """edgekit.devices.connection.Connection over SSH: what `edgekit profile --device rpi5` uses."""

    def __init__(self, device: Any, target: SshTarget, timeout_s: float = DEFAULT_TIMEOUT_S,
                 cpus: Sequence[int] | None = None):
        self.device = device
        self.target = target
        self.timeout_s = timeout_s
        # CPUs each run is pinned to on the device (default: the device's registered affinity).
        self.cpus = list(cpus) if cpus is not None else list(getattr(device, "affinity", ()) or ())

    def time_artifact(self, path: str, warmup: int, runs: int, threads: int) -> Any:
        from ..runtime import TimingStats

        _, result = run_on_device(self.target, path, runs=runs, warmup=warmup, threads=threads,
                                  cpus=self.cpus, timeout_s=self.timeout_s, keep_artifact=False)
        stats = dict(result["stats"])
        allowed = {f.name for f in dataclasses.fields(TimingStats)}
        return TimingStats(**{k: v for k, v in stats.items() if k in allowed})

    def environment(self) -> dict[str, Any]:
        return describe_over_ssh(self.target, cpus=self.cpus)


def connect_ssh(device: Any, host: str | None = None, port: int | None = None, identity: str | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, cpus: Sequence[int] | None = None,
                **_other: Any) -> SshConnection:
    """The SSH connector of edgekit.devices.connection.connect: --host, else the device file's address."""
    host = host or getattr(device, "address", "")
    if not host:
        raise UserError(f"device {device.name} is reached over SSH: give --host user@address "
                        "(or set `address` in its device file)")
    return SshConnection(device, SshTarget.from_env(host, port=port, identity=identity), timeout_s=timeout_s,
                         cpus=cpus)
