"""Search library: fast cost path equals the predictor, the budget is respected, seeds reproduce,
student spaces read from files (typos named), supernet quality ranks subnets."""
import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from edgekit.latency import Entry, LatencyTable, Predictor, Provenance
from edgekit.latency.grid import BUILTIN_GRIDS
from edgekit.latency.signature import macs
from edgekit.quality import CapacityObjective, DistillObjective, encoder_gmacs, load_audio, load_supernet
from edgekit.search import (Deployment, Evaluator, Limits, SearchSettings, fit_space_to_tables, nondominated_fronts,
                            resolve_space, run_search)
from edgekit.student_space import SpaceError, StudentSpace
from edgekit.widths import PAD_REVISION


def tiny_table(dtype="fp32", backend="onnx", device="host", per_mac=1e-6, overhead=0.02,
               export_rewrites=0) -> LatencyTable:
    """A 'measured' table of the tiny grid for a fake device whose blocks cost a fixed overhead
    plus a price per multiply-accumulate (int8 at a third of the fp32 price)."""
    grid = BUILTIN_GRIDS["tiny"]
    scale = per_mac / 3 if dtype == "int8" else per_mac
    entries = {}
    for s in grid.signatures():
        ms = overhead + macs(s.kind, s.as_dict()) * scale
        entries[s.key] = Entry(ms, ms * 0.95, ms * 1.05, 5)
    prov = Provenance(device=device, backend=backend, dtype=dtype, threads=1, method="measured",
                      date="2026-01-01T00:00:00+00:00", space="tiny", seconds=grid.seconds,
                      export_rewrites=export_rewrites)
    return LatencyTable(prov, entries)


DEPS = [Deployment("onnx", "fp32", tiny_table("fp32")), Deployment("onnx", "int8", tiny_table("int8"))]


def test_fast_cost_equals_predictor_and_param_count():
    # An ExecuTorch table of the padding revision prices padded widths (widths.py), the ONNX
    # ones the widths as they are: one evaluator serves both.
    deps = DEPS + [Deployment("executorch", "fp32", tiny_table("fp32", "executorch", export_rewrites=PAD_REVISION))]
    assert Predictor(deps[-1].table).pad_multiple == 16 and Predictor(DEPS[0].table).pad_multiple is None
    for name in ("tiny-student", "tiny-supernet", "student", "lighthubert-small"):
        space, _ = fit_space_to_tables(resolve_space(name), deps, 0.5)
        ev = Evaluator(space, deps, Limits(100.0), seconds=0.5)
        preds = [Predictor(d.table) for d in deps]
        rng = random.Random(1)
        for _ in range(40):
            c = ev.evaluate(space.sample(rng))
            for p, ms in zip(preds, c.latency_ms):
                assert ms == pytest.approx(p.predict_ms(c.arch, 0.5), rel=1e-12)
            assert c.params == c.arch.param_count(include_heads=False)
            assert c.arch == space.to_arch(c.genotype)


def test_search_respects_budget_and_uses_it():
    space = resolve_space("tiny-student")
    full = Evaluator(space, DEPS, Limits(1e9), 0.5).evaluate(space.largest()).predicted_ms
    budget = full * 0.5
    res = run_search(space, "tiny-student", DEPS, CapacityObjective(), Limits(budget), SearchSettings(budget_evals=400),
                     "host", seconds=0.5)
    assert res.best is not None and res.best.predicted_ms <= budget
    assert all(c.predicted_ms <= budget for c in res.front)
    assert res.best.predicted_ms >= 0.7 * budget  # the capacity objective spends the budget
    # The chosen deployment is the fastest one: int8 is cheaper on this fake device.
    assert res.deployments[res.best.deployment].dtype == "int8"
    # Front: latency rising, capacity rising.
    qs = [c.quality for c in res.front]
    assert qs == sorted(qs) and len(set(qs)) == len(qs)


def test_capacity_is_encoder_compute_not_parameters():
    from edgekit import zoo
    from edgekit.arch import TimeReduction, blocks

    hb = zoo.get_spec("hubert-base")
    layer_macs = sum(b.macs for b in blocks(hb, 1.0) if b.name.startswith("layer"))
    assert encoder_gmacs(hb) == pytest.approx(layer_macs / 1e9, rel=1e-12)
    # Same parameters, half the frames after a time reduction: less capacity, by about half.
    reduced = hb.replace(time_reduction=TimeReduction(0, 2, 2, upsample=True))
    assert 0.45 < encoder_gmacs(reduced) / encoder_gmacs(hb) < 0.55
    assert reduced.param_count(include_heads=False) > hb.param_count(include_heads=False)


def test_search_is_reproducible_with_a_seed():
    space = resolve_space("tiny-student")
    runs = [run_search(space, "s", DEPS, CapacityObjective(), Limits(2.0), SearchSettings(budget_evals=300, seed=s),
                       "host", seconds=0.5) for s in (3, 3, 4)]
    keys = [[c.genotype for c in r.evaluated] for r in runs]
    assert keys[0] == keys[1]
    assert keys[0] != keys[2]
    assert runs[0].best.genotype == runs[1].best.genotype


def test_evolution_beats_random_on_capacity():
    space = resolve_space("tiny-student")
    wins = 0
    for seed in range(3):
        best = {}
        for alg in ("evolution", "random"):
            r = run_search(space, "s", DEPS, CapacityObjective(), Limits(1.5),
                           SearchSettings(algorithm=alg, budget_evals=300, seed=seed), "host", seconds=0.5)
            best[alg] = r.best.quality
        wins += best["evolution"] >= best["random"]
    assert wins >= 2


def test_nondominated_sort_with_constraints():
    class C:
        def __init__(self, feasible, violation):
            self.feasible, self.violation = feasible, violation

    cands = [C(True, 0), C(True, 0), C(True, 0), C(False, 0.5), C(False, 0.1)]
    objs = [(1, 3), (2, 1), (2, 4), (0, 0), (0, 0)]
    fronts = nondominated_fronts(cands, objs)
    assert fronts == [[0, 1], [2], [4], [3]]


def test_impossible_budget_names_fastest_and_what_to_relax():
    space = resolve_space("tiny-student")
    res = run_search(space, "tiny-student", DEPS, CapacityObjective(), Limits(0.001), SearchSettings(budget_evals=100),
                     "host", seconds=0.5)
    assert res.best is None
    msg = res.impossible_message()
    assert "fastest found" in msg and f"{res.fastest.predicted_ms:.2f} ms" in msg and "raise --max-ms" in msg
    assert "\n" not in msg


def test_filterbank_left_out_when_table_cannot_price_it():
    space = resolve_space("student")  # the tiny table has no 512-wide blocks but can interpolate them
    no_fbank = {k: v for k, v in DEPS[0].table.entries.items() if not k.startswith("fbank")}
    table = LatencyTable(DEPS[0].table.provenance, no_fbank)
    fitted, notes = fit_space_to_tables(space, [Deployment("onnx", "fp32", table)], 0.5)
    assert not fitted.filterbank and any("filterbank" in n for n in notes)


def test_student_space_file_round_trip_and_typo(tmp_path):
    space = resolve_space("tiny-student")
    p = tmp_path / "space.json"
    p.write_text(json.dumps(space.to_dict()))
    assert resolve_space(str(p)) == space
    bad = space.to_dict()
    bad["embed_dim"] = bad.pop("embed_dims")
    p.write_text(json.dumps(bad))
    with pytest.raises(SpaceError, match="unknown key 'embed_dim'.*did you mean 'embed_dims'"):
        resolve_space(str(p))
    y = tmp_path / "space.yaml"
    y.write_text("kind: student\nname: mine\ndepths: [2]\nembed_dims: [32]\nheads: [2]\nffn_ratios: [2.0]\n"
                 "conv_widths: [16, 32]\nhead_dim: 16\npos_conv_kernel: 16\npos_conv_groups: 4\n")
    s = resolve_space(str(y))
    assert isinstance(s, StudentSpace) and s.conv_widths == (16, 32)


def test_student_operators_stay_in_space():
    space = resolve_space("student")
    rng = random.Random(0)
    for _ in range(200):
        a, b = space.sample(rng), space.sample(rng)
        for s in (space.mutate(a, rng, 0.5), space.crossover(a, b, rng)):
            spec = space.to_arch(s)
            assert spec.embed_dim in space.embed_dims and spec.num_layers in space.depths
            assert all(l.heads in space.heads and l.ffn_dim in space.ffn_dims_for(spec.embed_dim) for l in spec.layers)
            if s.frontend == "waveform":
                assert all(c.channels in space.conv_widths for c in spec.frontend.layers)


# --------------------------------------------------------------------------- supernet quality


def write_tiny_supernet(path, seed=0, pred_dim=32):
    """A tiny supernet saved as a LightHuBERT checkpoint (fairseq keys + cfg)."""
    from edgekit.convert.lighthubert import key_map
    from edgekit.space import get_space
    from edgekit.supernet import LightHubertSupernet

    torch.manual_seed(seed)
    space = get_space("tiny-supernet")
    net = LightHubertSupernet(space, pred_head_dim=pred_dim)
    sd = net.state_dict()
    inv = {v: k for k, v in key_map(space.supernet).items()}
    state = {inv[k]: v for k, v in sd.items() if k in inv}
    state[f"layer_pred_heads.{space.supernet.layers - 1}.weight"] = sd["pred_head.weight"]
    sn = space.supernet
    cfg = {"encoder_embed_dim": sn.embed_dim, "encoder_attention_heads": sn.heads, "encoder_ffn_embed_dim": sn.ffn_dim,
           "encoder_layers": sn.layers, "conv_pos": sn.pos_conv_kernel, "conv_pos_groups": sn.pos_conv_groups,
           "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "extractor_mode": "default"}
    torch.save({"cfg": {"model": cfg}, "model": state}, path)
    return path


def write_audio(folder, n=3, seconds=0.6):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"clip{i}.wav", wave.astype(np.float32), 16000)
    return folder


def test_supernet_quality_ranks_larger_subnet_above_smaller(tmp_path):
    ckpt = write_tiny_supernet(tmp_path / "sn.pt")
    loaded = load_supernet(str(ckpt), "tiny-supernet")
    assert loaded.has_pred_head
    obj = DistillObjective(loaded, load_audio(str(write_audio(tmp_path / "audio")), 0.5))
    space = loaded.space
    big, small = obj.subnet_loss(space.largest()), obj.subnet_loss(space.smallest())
    # The largest subnet is the teacher here: L1 0, cosine 1, so the loss is -log sigmoid(1).
    assert big == pytest.approx(float(-torch.nn.functional.logsigmoid(torch.tensor(1.0))), abs=1e-5)
    assert small > big + 0.01
    # In a search with room for everything, the measured loss picks the largest subnet.
    res = run_search(space, "tiny-supernet", DEPS, obj, Limits(1e6), SearchSettings(budget_evals=30, population=8,
                                                                                        parents=3), "host", seconds=0.5)
    assert res.best.genotype == space.largest()
    assert all(c.quality is not None for c in res.evaluated if c.feasible)
