"""Device registry: built-ins, user devices from TOML/JSON, one-line errors, `edgekit devices`."""
import json

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.devices import connect, get_device, list_devices
from edgekit.devices.registry import INT8_DOT_FLAGS
from edgekit.errors import FormatError, UserError


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path / "data"))


def test_builtins():
    names = [d.name for d in list_devices()]
    assert names[:5] == ["host", "pixel7", "pixel8", "rpi5", "rpi4"]
    rpi4 = get_device("rpi4")
    assert (rpi4.cores, rpi4.connection, rpi4.default_backend) == (4, "ssh", "onnx")
    p7 = get_device("pixel7")
    # Benchmark threads go to the big cores: 2 X1 + 2 A78.
    assert [c.core for c in p7.fastest_cores(4)] == ["Cortex-X1"] * 2 + ["Cortex-A78"] * 2
    assert p7.peak_gflops(4) == pytest.approx(2 * 2.85 * 32 + 2 * 2.35 * 16)
    assert get_device("host").measurable_here


def test_user_device_toml(tmp_path):
    d = tmp_path / "cfg" / "devices"
    d.mkdir(parents=True)
    (d / "jetson.toml").write_text('''
name = "jetson"
description = "Jetson Orin Nano CPU"
connection = "ssh"
address = "orin.local"
default_threads = 4
default_backend = "onnx"
mem_bandwidth_gbs = 30.0
[[clusters]]
count = 6
core = "Cortex-A78AE"
ghz = 1.5
fp32_flops_per_cycle = 16
int8_ops_per_cycle = 64
''')
    dev = get_device("jetson")
    assert dev.cores == 6 and dev.address == "orin.local" and dev.source.endswith("jetson.toml")
    out = CliRunner().invoke(main, ["devices", "--json"])
    assert out.exit_code == 0, out.output
    assert "jetson" in [r["name"] for r in json.loads(out.output)["devices"]]


@pytest.mark.parametrize("text, message", [
    ('{"name": "x", "bogus": 1}', "unknown device field(s) bogus"),
    ('{"name": "bad"', "not valid JSON"),
    ('{"name": "other", "description": "", "connection": "ssh", "default_threads": 1, '
     '"clusters": [{"count": 1, "core": "a", "ghz": 1, "fp32_flops_per_cycle": 8, "int8_ops_per_cycle": 8}]}',
     "does not match the file name"),
    ('{"name": "bad", "description": "", "connection": "pigeon", "default_threads": 1, '
     '"clusters": [{"count": 1, "core": "a", "ghz": 1, "fp32_flops_per_cycle": 8, "int8_ops_per_cycle": 8}]}',
     "connection='pigeon'"),
])
def test_bad_user_device_is_one_line(tmp_path, text, message):
    d = tmp_path / "cfg" / "devices"
    d.mkdir(parents=True)
    (d / "bad.json").write_text(text)
    with pytest.raises(FormatError) as e:
        list_devices()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_device_and_local_connection():
    with pytest.raises(UserError, match="unknown device 'pixel9'; known devices: host"):
        get_device("pixel9")
    env = connect(get_device("host")).environment()
    assert env["affinity"] and "python" in env["runtime_versions"]
    # Recorded in every host table's provenance: int8 speed depends on it.
    assert set(env["int8_dot_product"]) <= INT8_DOT_FLAGS


def test_device_main_reports_the_same_int8_dot_product_flags_as_the_host():
    from edgekit.runtime import device_main

    assert device_main.INT8_DOT_FLAGS == INT8_DOT_FLAGS
    assert device_main.system_facts()["int8_dot_product"] == \
        connect(get_device("host")).environment()["int8_dot_product"]


def test_devices_cli_lists_reach_and_tables():
    out = CliRunner().invoke(main, ["devices"])
    assert out.exit_code == 0, out.output
    for word in ("host", "pixel7", "pixel8", "rpi4", "rpi5", "adb", "ssh", "local"):
        assert word in out.output
