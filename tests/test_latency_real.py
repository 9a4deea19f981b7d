"""A small grid measured for real (ONNX Runtime on this machine) predicts a held-out model."""
import pytest

from edgekit.arch import ArchSpec, ConvLayer, LayerSpec, WaveformFrontend
from edgekit.latency import (LatencyTable, MeasurementCache, Predictor, Provenance, block_signatures, load_table,
                             measure_blocks, save_table)
from edgekit.latency.profile import measure_models, now_iso

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# One strided conv keeps the frontend to one block, so the test lowers few artifacts.
FRONT = WaveformFrontend((ConvLayer(32, 320, 320),), norm="group")


def _spec(layers, name):
    # No positional conv (a LayerNorm instead): one block fewer to lower.
    return ArchSpec(frontend=FRONT, embed_dim=32, layers=tuple(layers), pos_conv=None, name=name)


def test_measured_grid_predicts_held_out_model(tmp_path):
    from edgekit.devices import connect, get_device
    from edgekit.latency import runtime_measure

    measure = runtime_measure("onnx", "fp32", 1, connect(get_device("host")), warmup=5, runs=20,
                              workdir=str(tmp_path / "art"))
    grid_model = _spec([LayerSpec(4, 128, 16)], "grid")
    cache = MeasurementCache(tmp_path / "c.jsonl")
    entries = measure_blocks(block_signatures(grid_model, 1.0), measure, cache)
    prov = Provenance(device="host", backend="onnx", dtype="fp32", threads=1, method="measured", date=now_iso())
    save_table(LatencyTable(prov, entries), tmp_path / "t.json")
    table = load_table(tmp_path / "t.json", backend="onnx", dtype="fp32")
    # Held out: two layers, one of them at widths the grid did not measure (interpolated).
    held_out = _spec([LayerSpec(4, 128, 16), LayerSpec(2, 64, 16)], "held-out")
    explained = Predictor(table).explain(held_out, 1.0)
    assert explained.interpolated >= 1
    measured = measure_models([held_out], 1.0, measure, cache)[0].median_ms
    # Loose: tiny models on 2 shared cores are noisy; the bound catches a broken sum or units.
    assert 0.4 * measured < explained.predicted_ms < 2.5 * measured, (explained.predicted_ms, measured)
