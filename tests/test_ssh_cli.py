"""`edgekit bench` and `edgekit profile` against a Raspberry Pi stand-in: the real OpenSSH
server of test_ssh_server on 127.0.0.1, driven through the CLI exactly as a user would."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgekit.cli import main
from edgekit.devices.measurements import MeasurementStore
from test_ssh_server import Server, _keygen, artifact, env, pytestmark, remote_args, server  # noqa: F401  (fixtures and skip marker)


def test_bench_rpi5_over_ssh(server, env, artifact):
    args = ["bench", str(artifact), "--device", "rpi5", *remote_args(server), "--runs", "4", "--warmup", "1",
            "--threads", "1"]
    # rpi5 pins to its four cores, which this 2-core machine does not have: a one-line refusal.
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "Error: the device reported: --cpus asks for CPU(s) [2, 3]" in r.output
    assert MeasurementStore().load() == []

    # A user device file for a 2-core Pi: the registry is extended without code.
    from edgekit.devices.registry import user_device_dir

    user_device_dir().mkdir(parents=True, exist_ok=True)
    (user_device_dir() / "pi-two.json").write_text(json.dumps({
        "name": "pi-two", "description": "2-core Pi stand-in", "connection": "ssh", "default_threads": 1,
        "affinity": [0], "clusters": [{"count": 2, "core": "Cortex-A76", "ghz": 2.4, "fp32_flops_per_cycle": 16,
                                       "int8_ops_per_cycle": 64}]}))
    r = CliRunner().invoke(main, [*args[:3], "pi-two", *args[4:], "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    m = out["measurement"]
    assert m["via"] == "ssh" and m["device"] == "pi-two" and m["runs"] == 4 and m["affinity"] == [0]
    assert out["conditions"]["threads"] == 1
    # The manifest carries the architecture; without a table for pi-two there is no prediction, and it says why.
    assert out["prediction"]["available"] is False and "pi-two" in out["prediction"]["reason"]
    assert len(MeasurementStore().find(m["artifact_sha256"], "pi-two")) == 1

    r = CliRunner().invoke(main, [*args[:3], "pi-two", *args[4:]])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"{artifact.name} on pi-two (root@127.0.0.1:{server.port}) with edgekit-runtime: ")
    assert lines[1].startswith("conditions: threads 1, cores 0, ")
    assert any(ln.startswith("earlier under the same conditions: ") for ln in lines)


def test_bench_needs_a_host(env, artifact):
    r = CliRunner().invoke(main, ["bench", str(artifact), "--device", "rpi5"])
    assert r.exit_code == 1
    assert r.output == "Error: device rpi5 is reached over SSH: give --host user@address\n"
