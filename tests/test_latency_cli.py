"""`edgekit predict` with measured and estimated tables; estimated provenance is printed."""
import dataclasses
import json

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.devices import get_device
from edgekit.latency import Correction, Entry, LatencyTable, Provenance, block_signatures, save_table
from edgekit.latency.estimate import estimate_table
from edgekit.zoo import get_spec

FIGURES = {"host_gemm_gflops": 100.0, "host_copy_gbs": 10.0}


@pytest.fixture()
def host_table(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path / "cfg"))
    entries = {}
    for name in ("tiny-hubert", "tiny-pruned"):
        for s in block_signatures(get_spec(name), 1.0):
            ms = 0.02 + 1e-6 * sum(s.dims)
            entries[s.key] = Entry(ms, ms * 0.9, ms * 1.2, 10)
    prov = Provenance(device="host", backend="onnx", dtype="fp32", threads=2, method="measured",
                      date="2026-01-01T00:00:00+00:00")
    return LatencyTable(prov, entries, Correction(1.0, -0.005))


def test_predict_measured_table_found_without_flags(host_table):
    from edgekit.latency import user_table_path

    save_table(host_table, user_table_path("host", "onnx", "fp32"))
    out = CliRunner().invoke(main, ["predict", "tiny-hubert", "--device", "host", "--backend", "onnx", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    sigs = block_signatures(get_spec("tiny-hubert"), 1.0)
    expected = sum(host_table.entries[s.key].median_ms for s in sigs) - 0.005 * len(sigs)
    assert data["predicted_ms"] == pytest.approx(expected, rel=1e-3)
    assert data["estimated"] is False and data["provenance"]["method"] == "measured"


def test_estimate_keeps_p10_and_p90_around_the_median_when_they_equal_it(host_table):
    # A block timed in a single run has p10 == median == p90. Scaling p10 by t / median can
    # land one ulp above t, and the table schema refuses p10 > median (seen in a profile run).
    flat = {k: Entry(e.median_ms, e.median_ms, e.median_ms, 1) for k, e in host_table.entries.items()}
    ms = 0.837407452880671  # a median for which median * (t / median) rounds above t for some t
    flat["conv:cin=512,cout=512,k=3,s=2,pad=0,n=1599,norm=0,bias=0,glu=0"] = Entry(ms, ms, ms, 1)
    host = LatencyTable(host_table.provenance, flat, host_table.correction)
    for name in ("pixel7", "rpi4", "rpi5"):
        est = estimate_table(host, get_device("host"), get_device(name), FIGURES)
        assert all(e.p10_ms <= e.median_ms <= e.p90_ms for e in est.entries.values())


def test_estimated_table_carries_provenance_and_cli_says_so(host_table, tmp_path):
    build = {"seconds": {"blocks": 300.0, "rechecking": 10.0, "anchors": 90.0, "total": 400.0}, "measured": 91,
             "from_journal": 0}
    host_table = dataclasses.replace(host_table, provenance=dataclasses.replace(host_table.provenance, build=build))
    est = estimate_table(host_table, get_device("host"), get_device("rpi4"), FIGURES)
    assert est.provenance.build is None  # nothing was profiled on the Pi
    d = est.provenance.derivation
    assert est.provenance.method == "estimated" and est.provenance.device == "rpi4"
    assert d["host"]["host_gemm_gflops"] == 100.0 and d["device"]["gemm_efficiency"] > 0
    assert d["source_table"]["device"] == "host"
    assert est.correction.kind_scale == host_table.correction.kind_scale  # carried over with the scale
    # A slower device: every block takes longer than on the host.
    assert all(est.entries[k].median_ms > host_table.entries[k].median_ms for k in est.entries)
    path = tmp_path / "rpi4.json"
    save_table(est, path)
    out = CliRunner().invoke(main, ["predict", "tiny-pruned", "--device", "rpi4", "--table", str(path)])
    assert out.exit_code == 0, out.output
    assert "ESTIMATED" in out.output and "predicted" in out.output
    out = CliRunner().invoke(main, ["predict", "tiny-pruned", "--device", "rpi4", "--table", str(path), "--json"])
    assert json.loads(out.stdout)["estimated"] is True
    assert "ESTIMATED" in out.stderr


def test_wrong_backend_or_dtype_table_refused(host_table, tmp_path):
    path = tmp_path / "host.json"
    save_table(host_table, path)
    for extra, reason in ((["--backend", "executorch"], "is a onnx table (backend), but backend executorch"),
                          (["--backend", "onnx", "--dtype", "int8"], "is a fp32 table (dtype), but dtype int8")):
        out = CliRunner().invoke(main, ["predict", "tiny-hubert", "--device", "host", "--table", str(path), *extra])
        assert out.exit_code == 1
        assert reason in out.output and out.output.count("\n") == 1


def test_no_table_error_names_the_fix(host_table):
    out = CliRunner().invoke(main, ["predict", "tiny-hubert", "--device", "host", "--backend", "tflite"])
    assert out.exit_code == 1
    assert "edgekit profile --device host --backend tflite --dtype fp32" in out.output


def test_profile_cli_writes_table_found_again_and_estimates(tmp_path, monkeypatch):
    """The profile command's plumbing with a fake measurement (real lowering is covered by
    test_latency_real.py): table in the user dir, predict finds it without flags, the
    estimated table it derives says so."""
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDGEKIT_CONFIG_DIR", str(tmp_path / "cfg"))
    import edgekit.latency.estimate as estimate
    import edgekit.latency.measure as measure_mod

    def fake_measure(backend, dtype, threads, connection, warmup=3, runs=15, workdir=None, min_timed_ms=500.0,
                     lower_workers=None):
        def measure(module, example):
            ms = 0.05 + 1e-7 * sum(p.numel() for p in module.parameters()) * example.shape[-1] ** 0.5
            return {"median_ms": ms, "p10_ms": ms, "p90_ms": ms * 1.1, "n": runs}
        measure.close = lambda: None
        return measure

    monkeypatch.setattr(measure_mod, "runtime_measure", fake_measure)
    monkeypatch.setattr(estimate, "host_figures", lambda threads: FIGURES)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"name": "mini", "embed_dims": [32], "heads": [2], "ffn_ratios": [2.0], "depths": [2],
                                "head_dim": 16, "conv_channels": 32, "pos_conv_kernel": 16, "pos_conv_groups": 4,
                                "seconds": [0.5]}))
    out = CliRunner().invoke(main, ["profile", "--backend", "onnx", "--threads", "1", "--space", str(grid),
                                    "--validate", "2", "--estimate", "rpi4", "-o", str(tmp_path / "t.json")])
    assert out.exit_code == 0, out.output
    assert "2 held-out models: MAPE" in out.output and "ESTIMATED table for rpi4" in out.output
    assert "table built in" in out.output and "measured now, 0 from the journal" in out.output
    assert (tmp_path / "t.json").exists()
    res = CliRunner().invoke(main, ["predict", "tiny-hubert", "--device", "host", "--backend", "onnx",
                                    "--seconds", "0.5"])
    assert res.exit_code == 0, res.output
    assert "measured table for host, onnx fp32, 1 thread(s)" in res.output
    from edgekit.latency import user_table_path

    # The path stays whole on its line to be copied, however long it is (no wrapping at the width).
    assert f"table: {user_table_path('host', 'onnx', 'fp32')} - measured table" in res.output
    res = CliRunner().invoke(main, ["predict", "tiny-hubert", "--device", "rpi4", "--seconds", "0.5"])
    assert res.exit_code == 0, res.output
    assert "ESTIMATED" in res.output
    from edgekit.latency import best_table

    source = best_table("rpi4", "onnx", "fp32").provenance.derivation["source_table"]
    assert source["path"] == str(user_table_path("host", "onnx", "fp32"))  # the estimate names its host table
    listing = CliRunner().invoke(main, ["devices"])
    assert "onnx fp32 measured" in listing.output and "onnx fp32 estimated" in listing.output


def test_host_figures_time_each_figure_in_its_own_warm_loop(monkeypatch):
    """GEMM and copy are each timed in their own loop (interleaving them let the copy flush the
    caches before every GEMM); every loop warms up and keeps at least five samples."""
    import edgekit.latency.estimate as estimate

    calls = []
    real = estimate._rate_loop

    def spy(work, units, seconds, **kw):
        calls.append(units)
        return real(work, units, seconds, **kw)

    monkeypatch.setattr(estimate, "_rate_loop", spy)
    figs = estimate.host_figures(1, seconds=0.001)
    assert calls == [2 * 1024 ** 3, 2 * 32 * 1024 * 1024]
    assert figs["host_gemm_gflops"] > 0 and figs["host_copy_gbs"] > 0
    runs = []
    assert estimate._rate_loop(lambda: runs.append(1), 1.0, 0.0, warmup=2, min_runs=5) > 0
    assert len(runs) == 2 + 5
