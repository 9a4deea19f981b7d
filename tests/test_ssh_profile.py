"""`edgekit profile --device rpi5 --host ...` against the real OpenSSH server of
test_ssh_server on 127.0.0.1: a measured table built through SSH, and a wrong host key that
leaves the tables untouched."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgekit.cli import main
from test_ssh_server import Server, _keygen, env, pytestmark, remote_args, server  # noqa: F401  (fixtures and skip marker)


def _fast_onnx_lowering(monkeypatch):
    """Profiling exports dozens of blocks; the legacy TorchScript ONNX exporter does it in a
    fraction of the dynamo exporter's time. Only the exporter is swapped: the SSH path, the
    device-side runner and the table writing are the real ones."""
    import torch

    import edgekit.export as export

    def lower(module, example, backend, dtype, path, calibration=None):
        assert backend == "onnx" and dtype == "fp32"
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, opset_version=17)

    monkeypatch.setattr(export, "lower_module", lower)


def _grid(tmp_path: Path) -> Path:
    g = tmp_path / "grid.json"
    g.write_text(json.dumps({"name": "mini", "embed_dims": [32], "heads": [2], "ffn_ratios": [2.0], "depths": [1],
                             "head_dim": 16, "conv_channels": 16, "pos_conv_kernel": 16, "pos_conv_groups": 4,
                             "seconds": [0.1]}))
    return g


def test_profile_rpi5_over_ssh_builds_a_measured_table(server, env, tmp_path, monkeypatch):
    _fast_onnx_lowering(monkeypatch)
    from edgekit.latency import best_table, user_table_path

    r = CliRunner().invoke(main, ["profile", "--device", "rpi5", *remote_args(server), "--backend", "onnx",
                                  "--space", str(_grid(tmp_path)), "--runs", "2", "--warmup", "0", "--threads", "1",
                                  "--affinity", "0", "--rounds", "1", "--min-time-ms", "0", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["entries"] > 0 and out["provenance"]["method"] == "measured"
    assert out["provenance"]["affinity"] == [0] and out["provenance"]["cpu"]["hostname"]
    table = best_table("rpi5", "onnx", "fp32")
    assert str(table.path) == str(user_table_path("rpi5", "onnx", "fp32")) and not table.provenance.estimated
    # Each block artifact was removed from the device after it was timed.
    assert list((tmp_path / "remote" / "artifacts").iterdir()) == []


def test_profile_with_a_wrong_host_key_leaves_tables_untouched(server, env, tmp_path, monkeypatch):
    _fast_onnx_lowering(monkeypatch)
    from edgekit.latency import user_table_path

    _keygen(tmp_path / "other")
    pub = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"[127.0.0.1]:{server.port} {pub[0]} {pub[1]}\n")
    monkeypatch.setenv("EDGEKIT_SSH_KNOWN_HOSTS", str(kh))
    dest = user_table_path("rpi5", "onnx", "fp32")
    r = CliRunner().invoke(main, ["profile", "--device", "rpi5", *remote_args(server), "--backend", "onnx",
                                  "--space", str(_grid(tmp_path)), "--runs", "2", "--threads", "1", "--affinity", "0",
                                  "--rounds", "1", "--min-time-ms", "0"])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: the host key of root@127.0.0.1:{server.port} does not match")
    assert r.output.count("\n") == 1
    assert not dest.exists()
