"""Predictor, profiler cache and correction with a fake measurement (deterministic, fast),
plus one small real ONNX Runtime grid on this machine."""
import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch

from edgekit import zoo
from edgekit.arch import LayerSpec
from edgekit.latency import MeasurementCache, Predictor, Provenance, block_signatures, build_table, measure_blocks
from edgekit.latency.grid import BUILTIN_GRIDS, ProfileGrid
from edgekit.latency.accuracy import accuracy
from edgekit.latency.profile import measure_models
from edgekit.latency.modules import build_block_module
from edgekit.latency.signature import make, parse_key
from edgekit.latency.table import Entry, LatencyTable


class MacCounter:
    """Fake device: 0.05 ms per call plus 1 ns per multiply-accumulate of Linear/Conv layers."""

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, module, example):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        total = [0.0]
        weight = self.conv_weight(module)

        def hook(m, inp, out):
            if isinstance(m, torch.nn.Linear):
                total[0] += out.numel() * m.in_features
            elif isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * weight(m)

        handles = [m.register_forward_hook(hook) for m in module.modules()]
        with torch.no_grad():
            module(example)
        for h in handles:
            h.remove()
        ms = 0.05 + total[0] * 1e-6
        return {"median_ms": ms, "p10_ms": ms * 0.95, "p90_ms": ms * 1.05, "n": 5}

    def conv_weight(self, module):
        """Cost per conv MAC relative to a Linear MAC, per conv layer, for `module`."""
        return lambda conv: 1.0


def _prov(**kw):
    base = dict(device="host", backend="onnx", dtype="fp32", threads=1, method="measured",
                date="2026-01-01T00:00:00+00:00", space="tiny")
    base.update(kw)
    return Provenance(**base)


SMALL = ProfileGrid("small", embed_dims=(32,), heads=(1, 4), ffn_ratios=(1.0, 4.0), depths=(2,), head_dim=16,
                    conv_channels=32, pos_conv_kernel=16, pos_conv_groups=4, seconds=(0.5,))


def test_signatures_follow_the_model():
    for name in ("tiny-hubert", "tiny-fithubert", "tiny-fbank", "tiny-pruned"):
        spec = zoo.get_spec(name)
        sigs = block_signatures(spec, 1.0)
        kinds = [s.kind for s in sigs]
        assert kinds.count("attention") + kinds.count("ffn") <= 2 * spec.num_layers
        for s in sigs:
            assert parse_key(s.key) == (s.kind, s.as_dict())
    pruned = block_signatures(zoo.get_spec("tiny-pruned"), 1.0)
    assert any(s.kind == "attention" and s.dim("h") == 0 for s in pruned)  # LN of a removed block


def test_predictor_interpolates_and_corrects(tmp_path):
    fake = MacCounter()
    cache = MeasurementCache(tmp_path / "c.jsonl")
    table = build_table(BUILTIN_GRIDS["tiny"], fake, cache, _prov())
    # Whole models pay the call overhead once; the correction learns that blocks over-count it.
    assert table.correction.per_block_ms < 0
    pred = Predictor(table)
    grid = BUILTIN_GRIDS["tiny"]
    rng = random.Random(0)
    specs = [grid.sample(rng) for _ in range(8)]
    measured = measure_models(specs, 0.5, fake, cache)
    acc = accuracy([pred.predict_ms(s, 0.5) for s in specs], [m.median_ms for m in measured],
                   [s.name for s in specs])
    assert acc.mape < 10.0, acc.rows
    # Off-grid widths were interpolated, not looked up.
    assert any(pred.explain(s, 0.5).interpolated for s in specs)


def test_interpolation_between_grid_points(tmp_path):
    table = build_table(SMALL, MacCounter(), MeasurementCache(tmp_path / "c.jsonl"), _prov(), anchors=[])
    pred = Predictor(table)
    lo, hi = (Predictor(table).block_ms(s)[0] for s in
              (block_signatures(SMALL._arch(SMALL.frontends()[0], 32, (LayerSpec(h, 32, 16),)), 0.5)[-2]
               for h in (1, 4)))
    mid_sig = block_signatures(SMALL._arch(SMALL.frontends()[0], 32, (LayerSpec(2, 32, 16),)), 0.5)[-2]
    mid, source = pred.block_ms(mid_sig)
    assert source == "interpolated"
    assert lo < mid < hi


def test_cache_resumes_after_interruption(tmp_path):
    sigs = SMALL.signatures()
    cache_path = tmp_path / "c.jsonl"
    first = MacCounter(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        measure_blocks(sigs, first, MeasurementCache(cache_path))
    # A torn last line (killed mid-write) is ignored on reload.
    with open(cache_path, "a") as f:
        f.write('{"key": "norm:e=1')
    cache = MeasurementCache(cache_path)
    assert len(cache) == 5
    second = MacCounter()
    entries = measure_blocks(sigs, second, cache)
    assert second.calls == len(sigs) - 5
    assert set(entries) == {s.key for s in sigs}
    third = MacCounter()
    measure_blocks(sigs, third, MeasurementCache(cache_path))  # a second grid reuses every block
    assert third.calls == 0


def test_cache_is_kept_per_timing_revision(tmp_path, monkeypatch):
    # A runner whose timing changed must not reuse the timings of its old revision.
    from edgekit import runtime
    from edgekit.export import REWRITES_REVISION

    monkeypatch.setitem(runtime.TIMING_REVISION, "onnx", 1)
    monkeypatch.setitem(runtime.TIMING_REVISION, "executorch", 2)
    onnx = MeasurementCache.for_config("host", "onnx", "fp32", 2, root=tmp_path).path
    pte = MeasurementCache.for_config("host", "executorch", "fp32", 2, root=tmp_path).path
    assert onnx.name == f"host-onnx-fp32-t2-rw{REWRITES_REVISION}.jsonl"
    assert pte.name == f"host-executorch-fp32-t2-rw{REWRITES_REVISION}-rt2.jsonl"


def test_fast_path_speed_is_reasonable(tmp_path):
    """The search's fast path: many predictions of fresh specs (count only, no timed assert)."""
    table = build_table(SMALL, MacCounter(), MeasurementCache(tmp_path / "c.jsonl"), _prov(), anchors=[])
    pred = Predictor(table)
    rng = random.Random(1)
    specs = [SMALL.sample_subnet(rng) for _ in range(200)]
    values = [pred.predict_ms(s, 0.5) for s in specs]
    assert all(v > 0 for v in values)
    assert pred.predict_ms(specs[0], 0.5) == values[0]  # memoised: same answer



CONV128 = ProfileGrid("conv128", embed_dims=(32,), heads=(2,), ffn_ratios=(2.0,), depths=(1,), head_dim=16,
                      conv_channels=128, pos_conv_kernel=16, pos_conv_groups=4, seconds=(0.5,))


def test_much_smaller_conv_is_predicted_much_cheaper(tmp_path):
    """A conv group measured at one width only (128 channels) must not price a 16-channel conv
    like the 128-channel one: it is extrapolated by the table's cost model from its nearest
    measured point."""
    fake = MacCounter()
    table = build_table(CONV128, fake, MeasurementCache(tmp_path / "c.jsonl"), _prov(), anchors=[])
    pred = Predictor(table)
    wide = [s for s in CONV128.signatures() if s.kind == "conv" and s.dim("k") == 3 and s.dim("n") == 1599][0]
    narrow = make(wide.name, "conv", **{**wide.as_dict(), "cin": 16, "cout": 16})
    wide_ms, src = pred.block_ms(wide)
    assert src == "table"
    narrow_ms, src = pred.block_ms(narrow)
    assert src == "extrapolated"
    # 64x fewer MACs: the fake device's truth is ~0.1 ms against ~3 ms.
    assert narrow_ms < wide_ms / 8
    module, example = build_block_module(narrow)
    truth = fake(module, example)["median_ms"]
    assert truth / 3 < narrow_ms < truth * 3
    # A whole narrow model is priced far below the measured-width one.
    narrow_spec = zoo.get_spec("tiny-hubert")
    assert pred.predict_ms(narrow_spec, 0.5) < pred.predict_ms(CONV128.anchor_models()[0], 0.5) / 4


def test_edge_grid_covers_the_student_space():
    """Every block kind a `student` architecture runs is measured by the default device grid,
    with several widths per conv (kernel, stride) kind, so the search prices students from
    measured neighbours."""
    from edgekit.student_space import get_student_space

    grid = BUILTIN_GRIDS["edge"]
    sigs = grid.signatures()
    kinds = {s.kind for s in sigs}
    space = get_student_space("student")
    rng = random.Random(0)
    for _ in range(30):
        for s in block_signatures(space.to_arch(space.sample(rng)), 1.0):
            assert s.kind in kinds, s.key
    widths: dict[tuple, set] = {}
    for s in sigs:
        if s.kind == "conv" and not s.dim("glu"):
            widths.setdefault((s.dim("k"), s.dim("s")), set()).add(s.dim("cout"))
    assert set(widths) == {(10, 5), (3, 2), (2, 2)}
    assert all(len(v) >= 3 for v in widths.values()), widths
    assert {"time_reduction", "upsample", "fbank"} <= kinds


class DriftingDevice(MacCounter):
    """Fake two-phase measure (lower, then time) on a device whose speed drifts: every third
    timing pass is twice as slow, as a shared VM sometimes is."""

    def __init__(self, tmp_path):
        super().__init__()
        self.tmp, self.modules, self.passes = tmp_path, {}, 0

    def lower(self, module, example, name):
        path = self.tmp / f"{name}.fake"
        path.write_text("artifact")
        self.modules[str(path)] = (module, example)
        return str(path)

    def time(self, path):
        stats = MacCounter.__call__(self, *self.modules[path])
        self.passes += 1
        slow = 2.0 if self.passes % 3 == 0 else 1.0
        return {k: (v * slow if k != "n" else v) for k, v in stats.items()}


def test_whole_models_are_timed_in_interleaved_rounds(tmp_path):
    grid = BUILTIN_GRIDS["tiny"]
    rng = random.Random(0)
    specs = [grid.sample(rng) for _ in range(2)]
    steady = [e.median_ms for e in measure_models(specs, 0.5, MacCounter(), MeasurementCache(tmp_path / "a.jsonl"))]
    drifting = DriftingDevice(tmp_path)
    cache = MeasurementCache(tmp_path / "b.jsonl")
    seen = []
    out = measure_models(specs, 0.5, drifting, cache, progress=lambda w, d, n: seen.append((d, n)), rounds=3)
    # Lowered once each, timed 3 times each, the slow pass outvoted by the median.
    assert drifting.passes == 6 and seen[-1] == (6, 6)
    assert [e.median_ms for e in out] == pytest.approx(steady)
    assert all(e.n == 15 for e in out)
    assert not list(tmp_path.glob("*.fake"))  # the artifacts are deleted
    # Cached under a key that says how it was measured: a second call times nothing.
    reloaded = MeasurementCache(tmp_path / "b.jsonl")
    again = measure_models(specs, 0.5, drifting, reloaded, rounds=3)
    assert drifting.passes == 6 and [e.median_ms for e in again] == [e.median_ms for e in out]
    # Every pass's median is kept, the slow one included: it is the noise a validation reports.
    from edgekit.latency.accuracy import pass_spread
    from edgekit.latency.profile import model_keys

    passes = [reloaded.passes(k) for k in model_keys(specs, 0.5, drifting, 3)]
    assert all(len(ps) == 3 for ps in passes)
    assert [sorted(ps)[1] for ps in passes] == pytest.approx([e.median_ms for e in out])
    spread = pass_spread(passes)
    assert {k: spread[k] for k in ("median_pct", "max_pct", "models", "rounds")} == \
        {"median_pct": pytest.approx(100.0), "max_pct": pytest.approx(100.0), "models": 2, "rounds": 3}
    assert pass_spread([None, [1.0]]) is None


def test_pass_spread_says_what_a_perfect_predictor_could_reach():
    from edgekit.latency.accuracy import median_sd, pass_spread

    # A median of 9 normal draws strays about sqrt(pi / 18) as far as one draw; of 1, as far.
    assert median_sd(0.1, 1) == pytest.approx(0.1, rel=0.02)
    assert median_sd(0.1, 9) == pytest.approx(0.1 * (3.14159 / 18) ** 0.5, rel=0.06)
    assert median_sd(0.0, 9) == 0.0
    steady = pass_spread([[10.0, 10.0, 10.0]] * 3)
    assert steady["pass_sd_pct"] == 0 and steady["perfect_within_10pct"] == 1.0
    # Passes 10% apart: one pass strays ~5%, and more passes make the median more trustworthy.
    few = pass_spread([[10.0, 11.0, 10.5], [20.0, 22.0, 21.0]])
    many = pass_spread([[10.0, 11.0, 10.5] * 3, [20.0, 22.0, 21.0] * 3])
    assert few["pass_sd_pct"] == pytest.approx(4.77, abs=0.01)  # sd of log 10, 11, 10.5
    assert few["rounds"] == 3 and many["rounds"] == 9
    assert many["median_sd_pct"] < few["median_sd_pct"]
    assert few["perfect_within_10pct"] < many["perfect_within_10pct"] <= 1.0
    assert few["perfect_within_5pct"] < few["perfect_within_10pct"]


def test_a_slow_pass_is_read_off_the_chunk_itself():
    from edgekit.latency.speed import MIN_JOBS_FOR_PASS_SPEED, pass_factors

    base = [10.0, 20.0, 5.0, 40.0, 8.0]
    # The second pass ran 1.2x slower for every artifact, and one artifact had its own bad pass.
    medians = [[b, 1.2 * b, b] for b in base]
    medians[3][2] = 55.0
    f = pass_factors(medians)
    assert f == pytest.approx([1.0, 1 / 1.2, 1.0])
    # Too few artifacts to outvote one: the probes read the pass speed instead (or nothing does).
    few = medians[:MIN_JOBS_FOR_PASS_SPEED - 1]
    assert pass_factors(few) is None
    assert pass_factors(few, probes=[1.0, 1.1, 1.0]) == pytest.approx([1.0, 1 / 1.1, 1.0])
    assert pass_factors([[1.0], [2.0], [3.0], [4.0]]) is None  # one pass: nothing to bring together


def test_whole_models_in_one_slow_pass_come_back_at_the_batch_speed(tmp_path):
    grid = BUILTIN_GRIDS["tiny"]
    rng = random.Random(3)
    specs = [grid.sample(rng) for _ in range(5)]
    steady = [e.median_ms for e in measure_models(specs, 0.5, MacCounter(), MeasurementCache(tmp_path / "a.jsonl"))]

    class SlowPasses(DriftingDevice):
        # Passes 2 and 3 of 4 run 1.3x slower for every model: a median of raw passes would
        # land between the two speeds; brought to the batch's typical pass it does not.
        def time(self, path):
            stats = MacCounter.__call__(self, *self.modules[path])
            self.passes += 1
            slow = 1.3 if (self.passes - 1) // len(specs) in (1, 2) else 1.0
            return {k: (v * slow if k != "n" else v) for k, v in stats.items()}

    out = measure_models(specs, 0.5, SlowPasses(tmp_path), MeasurementCache(tmp_path / "b.jsonl"), rounds=4)
    got = [e.median_ms for e in out]
    assert all(1.0 <= g / s <= 1.3 for g, s in zip(got, steady))
    assert len({round(g / s, 6) for g, s in zip(got, steady)}) == 1  # one common speed for the batch


def test_runs_grow_until_about_a_second_is_timed():
    from edgekit.latency.measure import MAX_RUNS, runs_for

    assert runs_for(100.0, 15) == 15
    assert runs_for(10.0, 15) == 50
    assert runs_for(0.01, 15) == MAX_RUNS
    assert runs_for(10.0, 15, min_timed_ms=0) == 15


def test_blocks_are_timed_in_interleaved_chunks(tmp_path):
    sigs = SMALL.signatures()
    steady = measure_blocks(sigs, MacCounter(), MeasurementCache(tmp_path / "a.jsonl"))
    drifting = DriftingDevice(tmp_path)
    got = measure_blocks(sigs, drifting, MeasurementCache(tmp_path / "b.jsonl"), rounds=3, chunk=4)
    assert drifting.passes == 3 * len(sigs)
    assert {k: e.median_ms for k, e in got.items()} == pytest.approx({k: e.median_ms for k, e in steady.items()})


def test_block_chunks_mix_the_widths_of_the_grid(tmp_path):
    # Chunks are timed minutes apart; one holding only one width's blocks would shift that
    # whole interpolation group when the probe misreads its speed (measure_blocks).
    grid = BUILTIN_GRIDS["tiny"]
    sigs = [s for s in grid.signatures() if s.kind in ("attention", "ffn")]
    widths = {s.dim("e") for s in sigs}
    assert len(widths) == 2
    chunk = 4
    path = tmp_path / "order.jsonl"
    got = measure_blocks(sigs, DriftingDevice(tmp_path), MeasurementCache(path), rounds=2, chunk=chunk)
    assert list(got) == [s.key for s in sigs]  # handed back in the caller's order
    timed = [json.loads(line)["key"] for line in path.read_text().splitlines()]  # the journal's order
    assert sorted(timed) == sorted(s.key for s in sigs) and timed != [s.key for s in sigs]
    chunks = [timed[i:i + chunk] for i in range(0, len(timed), chunk)]
    mixed = [c for c in chunks if len({parse_key(k)[1]["e"] for k in c}) > 1]
    # In grid order only the chunk straddling the two widths would mix them.
    assert len(mixed) >= len(chunks) // 2


class AheadDevice(DriftingDevice):
    """DriftingDevice with RuntimeMeasure's lower_ahead / lower_many / bind, recording calls."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.events, self.ahead = [], []

    def bind(self, cache):
        self.events.append("bind")

    def lower_ahead(self, builds):
        self.events.append("ahead")
        self.ahead += builds
        return len(builds)

    def lower_many(self, items):
        self.events.append("lower")
        return [self.lower(*build(), name) for build, name in items]


def test_anchor_models_are_lowered_ahead_after_the_probe_reference(tmp_path):
    from edgekit.latency.profile import ModelJob

    grid = BUILTIN_GRIDS["tiny"]
    anchors = grid.anchor_models()[:3]
    device = AheadDevice(tmp_path)
    cache = MeasurementCache(tmp_path / "c.jsonl")
    table = build_table(grid, device, cache, _prov(), anchors=anchors, rounds=2)
    assert device.events[:3] == ["bind", "ahead", "bind"]  # the reference is timed before any worker starts
    assert device.ahead == [ModelJob(a, grid.seconds[0]) for a in anchors]
    assert len(table.correction.fitted_on) == 3
    n = len({s.key for s in grid.signatures()}) + len(anchors)
    build = table.provenance.build
    assert (build["measured"], build["from_journal"]) == (n, 0)
    assert build["seconds"]["total"] == pytest.approx(sum(v for k, v in build["seconds"].items() if k != "total"),
                                                      abs=0.2)
    # Resumed with everything measured: nothing is lowered, ahead or otherwise.
    again = AheadDevice(tmp_path)
    resumed = build_table(grid, again, MeasurementCache(tmp_path / "c.jsonl"), _prov(), anchors=anchors, rounds=2)
    assert "ahead" not in again.events and "lower" not in again.events
    assert (resumed.provenance.build["measured"], resumed.provenance.build["from_journal"]) == (0, n)
    # One pass per model (nothing interleaved): models are measured whole, nothing ahead.
    once = AheadDevice(tmp_path)
    build_table(grid, once, MeasurementCache(tmp_path / "d.jsonl"), _prov(), anchors=anchors, rounds=1,
                model_rounds=1)
    assert "ahead" not in once.events


class ProbedDrift(DriftingDevice):
    """Fake device whose whole speed changes between timing passes (every fourth pass runs
    1.15x slower, within the drift the probe guard accepts), with a speed probe that sees it, as
    RuntimeMeasure.probe does."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.rounds, self.factor, self.all_slow = 0, 1.0, False

    def probe(self):
        self.rounds += 1
        self.factor = 1.15 if self.all_slow or self.rounds % 4 == 0 else 1.0
        return 1.0 * self.factor

    def time(self, path):
        stats = MacCounter.__call__(self, *self.modules[path])
        self.passes += 1
        return {k: (v * self.factor if k != "n" else v) for k, v in stats.items()}


def test_speed_probe_brings_every_entry_to_one_speed(tmp_path):
    grid = BUILTIN_GRIDS["tiny"]
    anchors = grid.anchor_models()[:2]
    steady = build_table(grid, MacCounter(), MeasurementCache(tmp_path / "a.jsonl"), _prov(), anchors=anchors)
    drifting = ProbedDrift(tmp_path)
    cache = MeasurementCache(tmp_path / "b.jsonl")
    table = build_table(grid, drifting, cache, _prov(), anchors=anchors, rounds=3)
    assert drifting.rounds > 4  # some passes ran slow
    assert table.provenance.speed_probe["median_ms"] == pytest.approx(1.0)
    assert {k: e.median_ms for k, e in table.entries.items()} == \
        pytest.approx({k: e.median_ms for k, e in steady.entries.items()})
    assert table.correction.scale == pytest.approx(steady.correction.scale)
    # The probe figures survive the cache: a reload normalises the same way.
    again = build_table(grid, drifting, MeasurementCache(tmp_path / "b.jsonl"), _prov(), anchors=anchors, rounds=3)
    assert {k: e.median_ms for k, e in again.entries.items()} == pytest.approx(
        {k: e.median_ms for k, e in table.entries.items()})
    from edgekit.latency.accuracy import validate

    drifting.all_slow = True  # the machine slowed down: raw timings are 1.15x, normalised ones not
    acc = validate(table, grid, 4, 0.5, drifting, cache, rounds=3)
    assert acc.raw is not None and acc.raw.mape > acc.mape
    assert all("measured_raw_ms" in r for r in acc.rows)
    assert "raw timings" in acc.line() and "raw_timings" in acc.to_dict()


class BlindProbe(ProbedDrift):
    """Fake device whose whole speed is `factor`, with a speed probe that does not see it (on
    the AVX-512 VNNI host the FFN probe read held-out models 6% off their speed)."""

    def probe(self):
        self.rounds += 1
        return 1.0


def test_validation_brings_timings_to_the_table_speed_by_reference_models(tmp_path):
    from edgekit.latency.accuracy import validate
    from edgekit.latency.speed import SPEED_REFERENCES

    grid = BUILTIN_GRIDS["tiny"]
    anchors = grid.anchor_models()
    device = BlindProbe(tmp_path)
    cache = MeasurementCache(tmp_path / "c.jsonl")
    table = build_table(grid, device, cache, _prov(), anchors=anchors, rounds=3)
    ref = table.provenance.speed_reference
    assert len(ref["models"]) == SPEED_REFERENCES and ref["seconds"] == grid.seconds[0]
    # Mid-sized anchors: the ones closest (in log ms) to the anchors' median.
    ms = [row["measured_ms"] for row in table.correction.fitted_on]
    mid = float(np.median(ms))
    near = sorted(abs(math.log(m / mid)) for m in ms)[SPEED_REFERENCES - 1]
    assert all(abs(math.log(m["measured_ms"] / mid)) <= near + 1e-9 for m in ref["models"])
    assert min(ms) not in [m["measured_ms"] for m in ref["models"]]  # the tiny grid's outlier, 8x below the rest
    at_speed = validate(table, grid, 4, grid.seconds[0], device, cache, rounds=3)
    assert at_speed.speed["factor"] == pytest.approx(1.0)

    device.factor = 1.3  # an hour later the machine runs 1.3x slower; the probe misses it
    passes = device.passes
    slow = validate(table, grid, 4, grid.seconds[0], device, cache, seed=7, rounds=3)
    # The held-out models and the references were timed in the same passes.
    assert device.passes - passes == 3 * (4 + SPEED_REFERENCES)
    assert slow.speed["method"] == "reference models" and slow.speed["factor"] == pytest.approx(1 / 1.3, abs=1e-4)
    assert [m["now_ms"] for m in slow.speed["models"]] == pytest.approx([1.3 * m["measured_ms"] for m in ref["models"]],
                                                                         rel=1e-3)
    assert slow.raw is not None and slow.raw.mape > 20 > slow.mape
    assert f"{SPEED_REFERENCES} reference models, x0.769" in slow.line()
    assert all(len(r["passes_ms"]) == 3 for r in slow.rows)
    assert slow.pass_spread["models"] == 4 and "timing passes spread by" in slow.line()
    assert slow.to_dict()["pass_spread"] == slow.pass_spread
    # The batch is cached under its own keys: validating again times nothing.
    passes = device.passes
    again = validate(table, grid, 4, grid.seconds[0], device, cache, seed=7, rounds=3)
    assert device.passes == passes and again.mape == pytest.approx(slow.mape)

    # A table without references (older ones) falls back on the probe, which saw nothing.
    old = dataclasses.replace(table, provenance=dataclasses.replace(table.provenance, speed_reference=None))
    by_probe = validate(old, grid, 4, grid.seconds[0], device, cache, seed=8, rounds=3)
    assert by_probe.speed == {"method": "speed probe", "probe_ms": 1.0} and by_probe.mape > 20


def test_probe_readings_beyond_plausible_drift_are_ignored():
    from edgekit.latency.speed import MAX_PROBE_DRIFT, speed_factor

    assert speed_factor(1.0, 1.1) == pytest.approx(1 / 1.1)
    assert speed_factor(1.0, 0.9) == pytest.approx(1 / 0.9)
    assert speed_factor(1.0, 3.0) == 1.0 and speed_factor(1.0, 1 / (MAX_PROBE_DRIFT + 0.1)) == 1.0


class ConvFusing(MacCounter):
    """Fake device on which a conv costs 1.5x as much alone as inside a whole model (the
    channels-last conversions a lone ExecuTorch conv block pays at its borders)."""

    def conv_weight(self, module):
        lone = type(module).__name__ != "LastHidden"
        # Extractor convs only; the positional conv (kernel >= 16 here) is its own block kind.
        return lambda conv: 1.5 if lone and isinstance(conv, torch.nn.Conv1d) and conv.kernel_size[0] < 16 else 1.0


def test_correction_fits_a_conv_factor_when_lone_convs_cost_more(tmp_path):
    grid = BUILTIN_GRIDS["tiny"]
    anchors = grid.anchor_models()
    assert len(anchors) >= 6
    fake = ConvFusing()
    cache = MeasurementCache(tmp_path / "c.jsonl")
    table = build_table(grid, fake, cache, _prov(), anchors=anchors)
    assert table.correction.kind_scale["conv"] == pytest.approx(1 / 1.5, rel=0.1)
    # The factor survives the JSON round trip.
    from edgekit.latency.table import table_from_dict

    assert table_from_dict(table.to_dict(), "t").correction.kind_scale == table.correction.kind_scale
    rng = random.Random(5)
    specs = [grid.sample(rng) for _ in range(6)]
    measured = measure_models(specs, 0.5, fake, cache)
    pred = Predictor(table)
    acc = accuracy([pred.predict_ms(s, 0.5) for s in specs], [m.median_ms for m in measured], [""] * 6)
    assert acc.mape < 5.0, acc.rows


class Glitchy(MacCounter):
    """Fake device on which one block reads 2x slow the first time only (a bad moment of a
    shared machine) and another is always 1.6x slow (a real slow kernel)."""

    def __init__(self, glitch_ms, slow_ms):
        super().__init__()
        self.glitch_ms, self.slow_ms, self.glitched = glitch_ms, slow_ms, False

    def __call__(self, module, example):
        stats = super().__call__(module, example)
        f = 1.0
        if stats["median_ms"] == pytest.approx(self.glitch_ms) and not self.glitched:
            self.glitched, f = True, 2.0
        elif stats["median_ms"] == pytest.approx(self.slow_ms):
            f = 1.6
        return {k: (v * f if k != "n" else v) for k, v in stats.items()}


def test_blocks_off_their_group_are_timed_again(tmp_path):
    from collections import Counter

    from edgekit.latency.predict import disagreement

    grid = BUILTIN_GRIDS["tiny"]
    anchors = grid.anchor_models()[:2]
    steady = build_table(grid, MacCounter(), MeasurementCache(tmp_path / "a.jsonl"), _prov(), anchors=anchors)
    assert steady.provenance.rechecked is None  # a device that follows its cost model: nothing to recheck
    ms = {k: e.median_ms for k, e in steady.entries.items()}
    assert all(0.9 < r < 1.1 for r in disagreement(ms).values())
    counts = Counter(round(v, 9) for v in ms.values())
    ffn = sorted((k for k in ms if k.startswith("ffn") and counts[round(ms[k], 9)] == 1), key=ms.get)
    glitch, slow = ffn[-1], ffn[-2]
    device = Glitchy(ms[glitch], ms[slow])
    cache = MeasurementCache(tmp_path / "b.jsonl")
    table = build_table(grid, device, cache, _prov(), anchors=anchors)
    # The glitch was outvoted by two more timings; the slow kernel was confirmed once and kept.
    assert table.entries[glitch].median_ms == pytest.approx(ms[glitch])
    assert table.entries[slow].median_ms == pytest.approx(1.6 * ms[slow])
    rows = {r["key"]: r for r in table.provenance.rechecked["blocks"]}
    assert set(rows) == {glitch, slow}
    assert len(rows[glitch]["medians_ms"]) == 3 and len(rows[slow]["medians_ms"]) == 2
    # Re-timings are cached: building again times nothing new.
    calls = device.calls
    again = build_table(grid, device, MeasurementCache(tmp_path / "b.jsonl"), _prov(), anchors=anchors)
    assert device.calls == calls
    assert {k: e.median_ms for k, e in again.entries.items()} == \
        pytest.approx({k: e.median_ms for k, e in table.entries.items()})


def test_a_removed_block_does_not_price_the_narrowest_present_one():
    """Zero heads (only the norm and residual run) is its own group: one head is interpolated
    between the present widths, not dragged towards the removed block. The figures follow the
    ONNX int8 host curve (0.05 ms at 0 heads, then about 0.17 + 0.035 ms a head)."""
    def truth(e, h):
        return 0.05 if h == 0 else 0.17 + 0.035 * h + 0.00005 * e

    entries = {}
    for e in (512, 768):
        for h in (0, 1, 4, 8, 12):
            ms = truth(e, h)
            entries[make("a", "attention", e=e, h=h, hd=64, t=49, pre=0).key] = Entry(ms, ms * 0.95, ms * 1.05, 5)
    pred = Predictor(LatencyTable(_prov(), entries))
    for e, h in ((512, 2), (640, 1), (640, 3), (768, 6)):
        ms, src = pred.block_ms(make("a", "attention", e=e, h=h, hd=64, t=49, pre=0))
        assert src == "interpolated"
        assert ms == pytest.approx(truth(e, h), rel=0.05), (e, h)
    # The removed block keeps its own figure.
    ms, _ = pred.block_ms(make("a", "attention", e=640, h=0, hd=64, t=49, pre=0))
    assert ms == pytest.approx(0.05, rel=0.05)


def test_cache_keeps_its_probe_reference(tmp_path):
    cache = MeasurementCache(tmp_path / "c.jsonl")
    assert cache.probe_reference_ms is None
    cache.set_probe_reference(1.25)
    cache.put("a", Entry(1.0, 0.9, 1.1, 5))
    again = MeasurementCache(tmp_path / "c.jsonl")
    assert again.probe_reference_ms == pytest.approx(1.25) and again.get("a").median_ms == 1.0 and len(again) == 1
    with pytest.raises(ValueError, match="already 1.25 ms"):
        again.set_probe_reference(2.0)


class PairedHost:
    """Fake local connection with paired timing: every artifact costs its `cost` times the
    machine's current `speed`, and the probe (any path ending in speed-probe.onnx) 1 ms times it."""

    def __init__(self):
        self.speed, self.plain_timings = 1.0, 0
        self.calls = []  # ("plain" | "paired", runs) per timing

    def _cost(self, path):
        return 1.0 if path.endswith("speed-probe.onnx") else 5.0

    def time_artifact(self, path, warmup, runs, threads):
        from edgekit.runtime import summarize

        self.plain_timings += 1
        self.calls.append(("plain", runs))
        return summarize([self._cost(path) * self.speed] * runs)

    def time_artifact_paired(self, path, probe_path, warmup, runs, threads):
        from edgekit.runtime import PairedTiming, summarize

        self.calls.append(("paired", runs))
        calls = [self._cost(path) * self.speed] * runs
        return PairedTiming(summarize(calls), tuple(calls), tuple([self._cost(probe_path) * self.speed] * runs))


def test_paired_measure_brings_every_timing_to_the_journals_probe_reference(tmp_path):
    from edgekit.latency import runtime_measure

    host = PairedHost()

    def measure_for():
        m = runtime_measure("onnx", "fp32", 1, host, workdir=str(tmp_path / "art"))

        def lower(module, example, name="block"):
            path = tmp_path / "art" / f"{name}.onnx"
            path.write_bytes(b"")
            return str(path)

        m.lower = lower
        return m

    cache = MeasurementCache(tmp_path / "c.jsonl")
    measure = measure_for()
    assert measure.paired
    measure.bind(cache)
    assert cache.probe_reference_ms == pytest.approx(1.0) and measure.probe() == pytest.approx(1.0)
    host.speed = 2.0  # the machine now runs at half speed: raw timings double, paired ones do not
    assert measure.time(str(tmp_path / "art" / "x.onnx")).median_ms == pytest.approx(5.0)
    # Another process on the same journal reuses its reference instead of timing a new one.
    other = measure_for()
    before = host.plain_timings
    other.bind(MeasurementCache(tmp_path / "c.jsonl"))
    assert other.probe_reference_ms == pytest.approx(1.0) and host.plain_timings == before
    assert other.time(str(tmp_path / "art" / "x.onnx")).median_ms == pytest.approx(5.0)
    measure.close()
    other.close()


def test_run_count_is_estimated_once_per_lowered_file(tmp_path):
    from edgekit.latency import runtime_measure

    host = PairedHost()
    measure = runtime_measure("onnx", "fp32", 1, host, runs=5, min_timed_ms=100.0, workdir=str(tmp_path / "w"))
    measure.bind(MeasurementCache(tmp_path / "c.jsonl"))
    path = tmp_path / "w" / "block0.onnx"
    path.write_bytes(b"first")
    host.calls.clear()
    for _ in range(3):
        measure.time(str(path))
    # One 3-run estimate, then 100 ms / 5 ms = 20 runs in every pass.
    assert host.calls == [("plain", 3)] + [("paired", 20)] * 3
    # A later chunk reuses the name for another block: a new file, estimated again.
    replacement = tmp_path / "w" / "new.onnx"
    replacement.write_bytes(b"second block")
    replacement.replace(path)
    host.calls.clear()
    measure.time(str(path))
    assert host.calls == [("plain", 3), ("paired", 20)]
    measure.close()
