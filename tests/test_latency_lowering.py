"""Lowering in worker processes (latency/lowering.py): same artifacts, picklable jobs, and the
profile's interleaved path uses it."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit import runtime
from edgekit.arch import ArchSpec, ConvLayer, LayerSpec, WaveformFrontend
from edgekit.latency import MeasurementCache, measure_blocks
from edgekit.latency.lowering import LoweringPool, default_workers
from edgekit.latency.profile import BlockJob, ModelJob
from edgekit.latency.signature import make

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIGS = [make("ffn", "ffn", e=32, f=64, t=10, pre=0), make("attention", "attention", e=32, h=2, hd=16, t=10, pre=0),
        make("norm", "norm", e=32, t=10)]
SPEC = ArchSpec(frontend=WaveformFrontend((ConvLayer(32, 320, 320),), norm="group"), embed_dim=32,
                layers=(LayerSpec(2, 64, 16),), pos_conv=None, name="tiny")


def test_jobs_pickle_and_build_the_same_module():
    for job in [BlockJob(s) for s in SIGS] + [ModelJob(SPEC, 0.25)]:
        again = pickle.loads(pickle.dumps(job))
        assert again == job
        (m1, x1), (m2, x2) = job(), again()
        with torch.no_grad():
            assert torch.equal(m1(x1), m2(x2))
    assert 1 <= default_workers() <= 4


def test_pool_lowers_in_workers_and_artifacts_match_the_modules(tmp_path):
    pool = LoweringPool("onnx", "fp32", workers=2)
    try:
        jobs = [BlockJob(s) for s in SIGS] + [ModelJob(SPEC, 0.25)]
        paths = pool.lower([(job, str(tmp_path / f"a{i}.onnx")) for i, job in enumerate(jobs)])
        assert pool._pool is not None  # really went through the worker processes
    finally:
        pool.close()
    assert pool._pool is None
    for job, path in zip(jobs, paths):
        module, example = job()
        with torch.no_grad():
            ref = module(example).numpy()
        out = runtime.load(path, threads=1).run(example.numpy().astype(np.float32))
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), path
    with pytest.raises(ValueError, match="workers=0"):
        LoweringPool("onnx", "fp32", workers=0)


def test_interleaved_profile_lowers_through_the_pool(tmp_path):
    from edgekit.devices import connect, get_device
    from edgekit.latency import runtime_measure

    measure = runtime_measure("onnx", "fp32", 1, connect(get_device("host")), warmup=1, runs=3, min_timed_ms=0,
                              workdir=str(tmp_path / "art"), lower_workers=2)
    seen = []
    lower_many = measure.lower_many
    measure.lower_many = lambda items: seen.append(len(items)) or lower_many(items)
    try:
        entries = measure_blocks(SIGS, measure, MeasurementCache(tmp_path / "c.jsonl"), rounds=2)
    finally:
        measure.close()
    assert seen == [len(SIGS)]
    assert set(entries) == {s.key for s in SIGS} and all(e.median_ms > 0 for e in entries.values())
    assert not list((tmp_path / "art").glob("*.onnx"))  # blocks after timing, the probe on close


def test_models_lowered_ahead_are_taken_waited_for_and_cleaned_up(tmp_path):
    from edgekit.devices import connect, get_device
    from edgekit.latency import runtime_measure

    art = tmp_path / "art"
    measure = runtime_measure("onnx", "fp32", 1, connect(get_device("host")), warmup=1, runs=3, min_timed_ms=0,
                              workdir=str(art), lower_workers=2)
    model, other = ModelJob(SPEC, 0.25), ModelJob(SPEC.replace(name="other"), 0.5)
    fresh = []
    lower = measure.lowering.lower
    measure.lowering.lower = lambda items: fresh.extend(b for b, _ in items) or lower(items)
    try:
        assert measure.lower_ahead([model]) == 1
        assert measure.lower_ahead([model]) == 0  # already on its way
        block_path, model_path = measure.lower_many([(BlockJob(SIGS[0]), "b0"), (model, "m0")])
        # The model's file is the one lowered ahead; only the block was lowered now.
        assert fresh == [BlockJob(SIGS[0])] and model_path.endswith("ahead0.onnx")
        module, example = model()
        with torch.no_grad():
            ref = module(example).numpy()
        out = runtime.load(model_path, threads=1).run(example.numpy().astype(np.float32))
        assert np.abs(out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
        # A timing waits for whatever is still lowering ahead: the workers never share the
        # cores with a timed call.
        assert measure.lower_ahead([other]) == 1
        future = measure._ahead[other][0]
        assert measure.time(block_path).median_ms > 0
        assert future.done()
        for path in (block_path, model_path):  # what was asked for is the caller's, as in a profile
            Path(path).unlink()
    finally:
        measure.close()
    # The artifact lowered ahead and never asked for is removed with the rest.
    assert not list(art.glob("ahead*"))
    single = runtime_measure("onnx", "fp32", 1, connect(get_device("host")), workdir=str(tmp_path / "one"),
                             lower_workers=1)
    try:
        assert single.lower_ahead([model]) == 0  # nothing beside the caller to lower it
    finally:
        single.close()

