"""Measured feedback: a winner that misses its prediction rescales its deployment and the search
runs again (search_feedback.py), in the library and through `edgekit search --export` on host."""
import json
import os

import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.latency import Predictor, save_table
from edgekit.quality import CapacityObjective
from edgekit.search import Evaluator, Limits, SearchSettings, resolve_space, run_search
from edgekit.search_feedback import default_rounds, rescaled, search_with_feedback

from test_search import DEPS, tiny_table

SPACE = resolve_space("tiny-student")


def _budget(share=0.5):
    """`share` of the largest student on the fp32 table (int8 is priced at a third of it)."""
    return share * Evaluator(SPACE, DEPS[:1], Limits(1e9), 0.5).evaluate(SPACE.largest()).predicted_ms


def _search(budget):
    return lambda deps: run_search(SPACE, "tiny-student", deps, CapacityObjective(), Limits(budget),
                                   SearchSettings(budget_evals=300), "host", seconds=0.5)


def _true_ms(slow: dict):
    """A fake device: each deployment runs `slow[label]` times what its table (as profiled) says."""
    preds = {d.label: Predictor(d.table) for d in DEPS}

    def measure(res):
        best = res.best
        label = res.deployments[best.deployment].label
        return slow[label] * preds[label].predict_ms(best.arch, 0.5), label

    return measure


def test_default_rounds_rescale_every_deployment_once_then_confirm():
    assert default_rounds(DEPS) == 3 and default_rounds(DEPS * 2) == 5 and default_rounds(DEPS * 5) == 6


def test_rescaled_multiplies_every_prediction():
    dep = DEPS[0]
    spec = SPACE.to_arch(SPACE.largest())
    r = rescaled(dep, 1.7)
    assert Predictor(r.table).predict_ms(spec, 0.5) == pytest.approx(1.7 * Predictor(dep.table).predict_ms(spec, 0.5))
    assert r.measured_factor == pytest.approx(1.7) and r.to_dict()["measured_factor"] == 1.7
    assert rescaled(dep, 1.0) is dep


def test_underpredicted_deployment_is_rescaled_and_the_search_moves_on():
    # int8 is a third of the fp32 price in its table but runs 4x that on the device, so the
    # first winner (int8) is 4x over; after one rescale the search ships what fits.
    budget = _budget()
    fb = search_with_feedback(_search(budget), DEPS, _true_ms({"onnx fp32": 1.0, "onnx int8": 4.0}), rounds=3)
    first, last = fb.rounds[0], fb.rounds[-1]
    assert first.deploy == "onnx int8" and first.ratio == pytest.approx(4.0) and first.factor == 1.0
    assert len(fb.rounds) == 2 and fb.converged and fb.chosen == 1
    assert last.measured_ms <= budget * 1.1
    # The chosen result carries the rescaled deployment; its prediction now matches the device.
    dep = fb.result.deployments[fb.result.best.deployment]
    assert fb.result.best.predicted_ms <= budget
    assert {d.label: d.measured_factor for d in fb.result.deployments}["onnx int8"] == pytest.approx(4.0)
    assert fb.kept == dep.label
    d = fb.to_dict()
    assert d["converged"] and [r["round"] for r in d["rounds"]] == [0, 1]


def test_accurate_tables_take_one_round_and_impossible_budget_takes_none():
    fb = search_with_feedback(_search(_budget()), DEPS, _true_ms({"onnx fp32": 1.05, "onnx int8": 0.95}), rounds=3)
    assert len(fb.rounds) == 1 and fb.converged and fb.result.deployments == DEPS
    none = search_with_feedback(_search(1e-6), DEPS, _true_ms({"onnx fp32": 1.0, "onnx int8": 1.0}))
    assert none.rounds == [] and none.result.best is None and none.kept is None and not none.converged


def test_nothing_fits_once_rescaled():
    # Both deployments run 50x their tables: after the first winner is measured nothing in
    # the space fits, and that is the answer (the over-budget artifact is not kept).
    fastest = _search(1e9)(DEPS).fastest.predicted_ms
    fb = search_with_feedback(_search(1.5 * fastest), DEPS, _true_ms({"onnx fp32": 50.0, "onnx int8": 50.0}),
                              rounds=3)
    assert fb.result.best is None and fb.chosen == -1 and fb.kept is None and len(fb.rounds) >= 1
    assert not fb.converged and all(r.measured_ms > r.budget_ms * 1.1 for r in fb.rounds)


def test_without_convergence_the_best_round_within_budget_is_kept():
    # A device whose int8 speed drifts every time it is measured: never within 10%.
    budget = _budget()
    drift = iter([1.6, 0.5, 1.6])
    calls = []

    def measure(res):
        best = res.best
        label = res.deployments[best.deployment].label
        k = next(drift) if label == "onnx int8" else 1.0
        calls.append((label, k))
        return k * best.predicted_ms, len(calls) - 1  # what is kept: the call's number

    fb = search_with_feedback(_search(budget), DEPS, measure, rounds=3)
    assert len(fb.rounds) == 3 and not fb.converged
    ok = [r for r in fb.rounds if r.measured_ms <= budget * 1.1]
    assert ok and fb.rounds[fb.chosen] in ok
    assert len(calls) == 3 and fb.kept == fb.chosen  # what was kept is the chosen round's
    with pytest.raises(ValueError, match="rounds=0"):
        search_with_feedback(_search(budget), DEPS, measure, rounds=0)


def test_cli_export_on_host_times_the_winner_and_keeps_one_artifact(tmp_path):
    # A tiny table priced far above what this machine takes: the first winner runs far below
    # its prediction, so the deployment is rescaled and the search runs again.
    slow = tiny_table("fp32", per_mac=2e-5, overhead=2.0)
    table = tmp_path / "host-onnx-fp32.json"
    save_table(slow, table)
    budget = 0.5 * Predictor(slow).predict_ms(SPACE.to_arch(SPACE.largest()), 0.5)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["search", "--device", "host", "--max-ms", f"{budget:.3f}", "--seconds", "0.5",
                                       "--space", "tiny-student", "--budget-evals", "100", "--dtype", "fp32",
                                       "--table", str(table), "--export", "onnx", "--rounds", "2", "--out", str(out),
                                       "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rounds = data["export"]["rounds"]
    assert len(rounds["rounds"]) == 2 and rounds["rounds"][0]["measured_over_predicted"] < 0.5
    assert rounds["rounds"][1]["factor"] == pytest.approx(rounds["rounds"][0]["measured_over_predicted"], rel=1e-3)
    assert data["measured_feedback"] == rounds
    artifact = data["export"]["artifact"]
    assert os.path.dirname(artifact) == str(out) and os.path.exists(artifact)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["artifacts"]) == [os.path.basename(artifact)]
    assert not [p for p in os.listdir(out) if p.startswith(".search-round-")]
    assert json.loads((out / "search.json").read_text())["measured_feedback"] == rounds


def test_cli_rounds_without_export_on_host_is_refused(tmp_path):
    table = tmp_path / "host-onnx-fp32.json"
    save_table(tiny_table("fp32"), table)
    result = CliRunner().invoke(main, ["search", "--device", "host", "--max-ms", "5", "--space", "tiny-student",
                                       "--table", str(table), "--rounds", "2"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: --rounds 2 needs --export FORMAT and --device host")


def test_earlier_winner_within_budget_stands_when_a_rescaled_search_finds_nothing():
    # Round 1 runs well under its prediction (deployment rescaled down), round 2's bigger
    # winner runs far over (rescaled up past round 1's price): round 3 finds nothing, and
    # round 1's winner, which ran within the budget, is kept.
    budget = _budget(0.3)
    ratios = iter([0.7, 3.0])

    def measure(res):
        return next(ratios) * res.best.predicted_ms, res.best.arch

    fb = search_with_feedback(_search(budget), DEPS[:1], measure, rounds=3)
    assert len(fb.rounds) == 2 and fb.chosen == 0 and fb.result.best is not None
    assert fb.rounds[0].measured_ms <= budget and fb.kept == fb.result.best.arch



def test_cli_prints_the_artifact_path_as_written(tmp_path):
    # Architecture names hold brackets ("tiny-student[conv_32ch_...]"); the printed path must be
    # the file on disk, not what a markup parser leaves of it.
    table = tmp_path / "host-onnx-fp32.json"
    save_table(tiny_table("fp32"), table)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["search", "--device", "host", "--max-ms", "5", "--seconds", "0.5",
                                       "--space", "tiny-student", "--budget-evals", "50", "--table", str(table),
                                       "--export", "onnx", "--rounds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (artifact,) = out.glob("*.onnx")
    assert "[" in artifact.name and f"exported {artifact}" in result.output.replace("\n", "")
