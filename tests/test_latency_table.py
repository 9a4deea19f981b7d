"""Latency table schema: round trip, validation errors, refusal of mismatched tables."""
import dataclasses
import json

import pytest

from edgekit.errors import FormatError, UserError
from edgekit.latency import (Correction, Entry, LatencyTable, Provenance, best_table, find_tables, load_table,
                             save_table, table_from_dict, user_table_path)


def _table(method="measured", backend="onnx", dtype="fp32", device="host"):
    prov = Provenance(device=device, backend=backend, dtype=dtype, threads=2, method=method,
                      date="2026-01-02T03:04:05+00:00", affinity=(0, 1), runtime_versions={"onnxruntime": "1.32.0"},
                      cpu={"governor": None}, space="tiny", seconds=(0.5,), warmup=3, runs=15,
                      derivation={"model": "x"} if method == "estimated" else None)
    entries = {"ffn:e=32,f=64,t=24,pre=0": Entry(0.2, 0.18, 0.25, 15),
               "norm:e=32,t=24": Entry(0.01, 0.009, 0.012, 15)}
    return LatencyTable(prov, entries, Correction(1.1, -0.01, ({"name": "a", "measured_ms": 1.0},)))


def test_round_trip(tmp_path):
    from edgekit import zoo

    ref = {"seconds": 0.5, "models": [{"name": "anchor", "measured_ms": 3.5, "arch": zoo.get_spec("hubert-base").to_dict()}]}
    t = _table()
    build = {"seconds": {"blocks": 400.5, "rechecking": 0.0, "anchors": 120.0, "total": 520.5}, "measured": 91,
             "from_journal": 0}
    t = LatencyTable(dataclasses.replace(t.provenance, speed_reference=ref, build=build), t.entries, t.correction)
    save_table(t, tmp_path / "t.json")
    back = load_table(tmp_path / "t.json")
    assert back.provenance == t.provenance
    assert back.entries == t.entries
    assert back.correction == t.correction
    assert back.to_dict() == t.to_dict()
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema="edgekit.latency-table/0"), "schema"),
    (lambda d: d["provenance"].pop("backend"), "provenance lacks backend"),
    (lambda d: d["provenance"].update(method="guessed"), "provenance.method"),
    (lambda d: d["provenance"].update(derivation=None, method="estimated"), "derivation is missing"),
    (lambda d: d["entries"].update({"ffn:e=32,t=24": {"median_ms": 1, "p10_ms": 1, "p90_ms": 1, "n": 1}}),
     "do not match"),
    (lambda d: d["entries"].update({"warp:e=1": {"median_ms": 1, "p10_ms": 1, "p90_ms": 1, "n": 1}}), "unknown kind"),
    (lambda d: d["entries"]["norm:e=32,t=24"].update(median_ms=-1.0), "median_ms"),
    (lambda d: d["entries"]["norm:e=32,t=24"].update(p10_ms=5.0), "p10_ms <= median_ms"),
    (lambda d: d.update(extra=1), "unknown top-level"),
    (lambda d: d.update(entries={}), "entries is missing"),
    (lambda d: d["provenance"].update(speed_reference={"seconds": 1.0, "models": []}), "models must be a non-empty"),
    (lambda d: d["provenance"].update(speed_reference={"seconds": 1.0, "models": [
        {"name": "a", "measured_ms": 0, "arch": {}}]}), "measured_ms=0"),
    (lambda d: d["provenance"].update(speed_reference={"seconds": 1.0, "models": [
        {"name": "a", "measured_ms": 1.0, "arch": {"schema": "edgekit.arch/0"}}]}), "models[0].arch"),
    (lambda d: d["provenance"].update(build={"seconds": {"total": 1.0}, "measured": 1, "from_journal": 0}),
     "build.seconds must have exactly"),
    (lambda d: d["provenance"].update(build={"seconds": {"blocks": -1, "rechecking": 0, "anchors": 0, "total": 0},
                                             "measured": 1, "from_journal": 0}), "build.seconds.blocks=-1"),
    (lambda d: d["provenance"].update(build={"seconds": {"blocks": 1, "rechecking": 0, "anchors": 0, "total": 1},
                                             "measured": 1.5, "from_journal": 0}), "build.measured=1.5"),
])
def test_validation_errors(mutate, message):
    d = json.loads(json.dumps(_table().to_dict()))
    mutate(d)
    with pytest.raises(FormatError) as e:
        table_from_dict(d, "t.json")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_not_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_table(p)


@pytest.mark.parametrize("kw, reason", [({"backend": "executorch"}, "onnx table (backend)"),
                                        ({"dtype": "int8"}, "fp32 table (dtype)"),
                                        ({"device": "rpi4"}, "host table (device)")])
def test_wrong_backend_dtype_device_refused(tmp_path, kw, reason):
    save_table(_table(), tmp_path / "t.json")
    with pytest.raises(UserError) as e:
        load_table(tmp_path / "t.json", **kw)
    assert reason in str(e.value)


def test_measured_beats_estimated(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path))
    # The shipped rpi4 table is estimated; a measured one in the user dir must win.
    save_table(_table(device="rpi4"), user_table_path("rpi4", "onnx", "fp32"))
    found = find_tables("rpi4", "onnx", "fp32")
    assert found[0].provenance.method == "measured"
    assert best_table("rpi4", "onnx", "fp32").provenance.method == "measured"


def test_missing_table_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="edgekit profile --device host --backend tflite --dtype int8"):
        best_table("host", "tflite", "int8")
