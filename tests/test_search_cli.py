"""`edgekit search` end to end with a tiny measured table, a tiny supernet and tiny candidates."""
import json

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.latency import save_table

from test_search import tiny_table, write_audio, write_tiny_supernet


@pytest.fixture
def tables(tmp_path):
    paths = []
    for dtype in ("fp32", "int8"):
        p = tmp_path / f"host-onnx-{dtype}.json"
        save_table(tiny_table(dtype), p)
        paths.append(str(p))
    return paths


def run(args):
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def table_args(tables):
    return [a for t in tables for a in ("--table", t)]


def test_capacity_search_writes_outputs_and_says_quality_not_measured(tmp_path, tables):
    out = tmp_path / "out"
    code, text = run(["search", "--device", "host", "--max-ms", "1.5", "--seconds", "0.5", "--space", "tiny-student",
                      "--budget-evals", "200", "--out", str(out), *table_args(tables)])
    assert code == 0, text
    assert "quality was NOT measured" in text and "edgekit distill --teacher hubert-base --student" in text
    assert "Pareto front" in text and "chosen:" in text
    data = json.loads((out / "search.json").read_text())
    assert data["best"]["predicted_ms"] <= 1.5 and data["quality_measured"] is False
    assert data["seed"] == 0 and data["tables"][0]["method"] == "measured"
    assert len(data["candidates"]) == data["unique_candidates"] > 50
    assert {d["dtype"] for d in data["tables"]} == {"fp32", "int8"}
    from edgekit.arch import ArchSpec
    spec = ArchSpec.from_json((out / "best_arch.json").read_text())
    assert spec.to_dict() == data["best"]["arch"]
    assert (out / "pareto.png").stat().st_size > 1000


def test_json_output_is_reproducible(tables):
    args = ["search", "--device", "host", "--max-ms", "1.5", "--seconds", "0.5", "--space", "tiny-student",
            "--budget-evals", "150", "--seed", "7", "--json", *table_args(tables)]
    a, b = run(args), run(args)
    assert a[0] == b[0] == 0
    da, db = json.loads(a[1]), json.loads(b[1])
    assert da["best"] == db["best"] and da["front"] == db["front"]


def test_impossible_budget_fails_with_one_line(tables):
    code, text = run(["search", "--device", "host", "--max-ms", "0.01", "--seconds", "0.5", "--space", "tiny-student",
                      "--budget-evals", "50", *table_args(tables)])
    assert code == 1
    line = text.strip().splitlines()[-1]
    assert line.startswith("Error: no candidate in space tiny-student meets --max-ms 0.01")
    assert "fastest found" in line and "raise --max-ms to at least" in line


def test_unknown_device(tables):
    code, text = run(["search", "--device", "pixel9", "--max-ms", "30"])
    assert code == 1 and "unknown device 'pixel9'" in text and "pixel7" in text


def test_space_file_typo_names_the_key(tmp_path, tables):
    p = tmp_path / "space.json"
    p.write_text(json.dumps({"kind": "student", "name": "x", "depths": [2], "embed_dims": [32], "heads": [2],
                             "ffn_ratio": [2.0]}))
    code, text = run(["search", "--device", "host", "--max-ms", "5", "--space", str(p), *table_args(tables)])
    assert code == 1 and "unknown key 'ffn_ratio'" in text and "ffn_ratios" in text
    p.write_text(json.dumps({"name": "y", "embed_dim": [32], "heads": [2], "ffn_ratios": [2.0], "depths": [2]}))
    code, text = run(["search", "--device", "host", "--max-ms", "5", "--space", str(p), *table_args(tables)])
    assert code == 1 and "unknown key 'embed_dim'" in text


def test_supernet_without_audio(tmp_path, tables):
    code, text = run(["search", "--device", "host", "--max-ms", "5", "--supernet", str(tmp_path / "sn.pt"),
                      *table_args(tables)])
    assert code == 1 and "--supernet needs --audio DIR" in text


def test_supernet_mode_with_candidates(tmp_path, tables):
    ckpt = write_tiny_supernet(tmp_path / "sn.pt")
    audio = write_audio(tmp_path / "audio", n=2)
    out = tmp_path / "out"
    code, text = run(["search", "--device", "host", "--max-ms", "3", "--seconds", "0.5", "--supernet", str(ckpt),
                      "--space", "tiny-supernet", "--audio", str(audio), "--candidates", "tiny-hubert",
                      "--budget-evals", "24", "--out", str(out), "--json", *table_args(tables)])
    assert code == 0, text
    data = json.loads(text)
    assert data["quality_measured"] is True and data["objective"]["kind"] == "distill_loss"
    full = json.loads((out / "search.json").read_text())
    cand = [c for c in full["candidates"] if c["source"] == "tiny-hubert"]
    assert len(cand) == 1 and cand[0]["quality"] is not None and cand[0]["predicted_ms"] > 0
    assert (out / "best_subnet.pt").exists()
    import edgekit
    model, spec = edgekit.load(str(out / "best_subnet.pt"))
    assert spec.embed_dim == full["best"]["arch"]["embed_dim"]
