"""edgekit.runtime: timing statistics, loading errors, the missing-runtime hint, isolation."""
import builtins
import subprocess
import sys

import numpy as np
import pytest

from edgekit import runtime
from edgekit.runtime import timing


def test_summarize_statistics():
    s = timing.summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], warmup=2, threads=2, load_ms=5.0)
    assert s.median_ms == 5.5 and s.n == 10 and s.min_ms == 1 and s.max_ms == 100
    assert s.trimmed_mean_ms == pytest.approx(5.5)  # the 1 and the 100 are trimmed
    assert s.p10_ms == pytest.approx(1.9) and s.p90_ms == pytest.approx(18.1)
    d = s.to_dict()
    assert d["load_ms"] == 5.0 and d["threads"] == 2 and d["warmup"] == 2
    with pytest.raises(ValueError, match="at least one"):
        timing.summarize([])


def test_load_refuses_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(runtime.RuntimeLoadError, match="unknown artifact suffix"):
        runtime.load(tmp_path / "model.bin")
    with pytest.raises(runtime.RuntimeLoadError, match="no such artifact"):
        runtime.load(tmp_path / "model.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(runtime.RuntimeLoadError, match="onnxruntime could not load"):
        runtime.load(bad)


def test_missing_runtime_gives_install_hint(tmp_path, monkeypatch):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"x")
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(runtime.MissingRuntimeError) as e:
        runtime.load(art)
    assert str(e.value) == 'onnxruntime is not installed; install it with: pip install "edgekit[onnx]"'


def test_runtime_imports_nothing_of_edgekit_or_torch():
    code = ("import sys, edgekit.runtime; "
            "bad = [m for m in sys.modules if m == 'torch' or (m.startswith('edgekit.') and not "
            "m.startswith('edgekit.runtime'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # edgekit/__init__ itself imports the package (arch, models: torch); what matters on a
    # device is the copied package alone, so load the runtime files on their own too.
    assert "edgekit.export" not in out
    pkg = __import__("edgekit.runtime", fromlist=["x"]).__path__[0]
    code = (f"import sys; sys.path.insert(0, {str(pkg + '/..')!r}); import importlib.util as u; "
            f"spec = u.spec_from_file_location('rt', {pkg + '/__init__.py'!r}, submodule_search_locations=[{pkg!r}]); "
            "m = u.module_from_spec(spec); sys.modules['rt'] = m; spec.loader.exec_module(m); "
            "print(sorted(x for x in sys.modules if x in ('torch', 'edgekit') or x.startswith('edgekit.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_check_input_shape():
    class Fake(runtime.Runner):
        format = "fake"

        def _load(self):
            self.input_shape = (1, 4)

        def _run(self, x):
            return x * 2

    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
        r = Fake(f.name)
        np.testing.assert_array_equal(r.run(np.ones(4)), 2 * np.ones((1, 4)))
        with pytest.raises(runtime.RuntimeLoadError, match="pad the audio to 4 samples"):
            r.run(np.ones(5))
        stats = r.time(warmup=1, runs=5)
        assert stats.n == 5 and stats.median_ms >= 0


class _Clock:
    """A fake perf_counter: runners advance it by what their call 'costs' at the current speed."""

    def __init__(self):
        self.now, self.speed = 0.0, 1.0

    def perf_counter(self):
        return self.now


def _clocked(clock, cost_ms, shape=(1, 4)):
    class Clocked(runtime.Runner):
        format = "fake"
        calls = 0

        def _load(self):
            self.input_shape = shape

        def _run(self, x):
            type(self).calls += 1
            clock.now += cost_ms * clock.speed / 1e3
            return x

    return Clocked


def test_paired_timing_brings_each_call_to_the_reference_speed():
    paired = timing.PairedTiming(timing.summarize([10.0, 10.0, 20.0, 20.0]), (10.0, 10.0, 20.0, 20.0),
                                 (1.0, 1.0, 2.0, 2.0))
    at = paired.at_speed(1.0)
    assert at.median_ms == pytest.approx(10.0) and at.max_ms == pytest.approx(10.0) and at.n == 4
    with pytest.raises(ValueError, match="one probe reading per call"):
        timing.PairedTiming(timing.summarize([1.0]), (1.0,), ())


def test_time_against_follows_a_machine_that_halves_its_speed(tmp_path, monkeypatch):
    from edgekit.runtime import runners

    clock = _Clock()
    monkeypatch.setattr(runners, "_time", clock)
    target_cls, probe_cls = _clocked(clock, 4.0), _clocked(clock, 0.5)
    (tmp_path / "t.onnx").write_bytes(b"")
    (tmp_path / "p.onnx").write_bytes(b"")
    target, probe = target_cls(tmp_path / "t.onnx"), probe_cls(tmp_path / "p.onnx")

    slow_after = 25  # the machine runs at half speed from the 25th call of the target on

    def run(self, x):
        target_cls.calls += 1
        if target_cls.calls == slow_after:
            clock.speed = 2.0
        clock.now += 4.0 * clock.speed / 1e3
        return x

    monkeypatch.setattr(target_cls, "_run", run)
    got = target.time_against(probe, warmup=2, runs=60, slice_ms=20.0, burst_ms=2.0)
    assert len(got.samples_ms) == len(got.probe_ms) == 60 and got.stats.n == 60
    assert min(got.samples_ms) == pytest.approx(4.0) and max(got.samples_ms) == pytest.approx(8.0)
    # Raw, the calls read 4 and 8 ms; brought to the probe's fast-machine speed (0.5 ms) every
    # call reads 4 ms except the one slice that straddles the change.
    at = got.at_speed(0.5)
    assert at.median_ms == pytest.approx(4.0)
    assert sum(abs(v - 4.0) > 1e-6 for v in (t * 0.5 / q for t, q in zip(got.samples_ms, got.probe_ms))) <= 5
    assert probe_cls.calls > 60 / 5  # a burst around every slice of about five calls
    with pytest.raises(runtime.RuntimeLoadError, match="expected runs >= 1"):
        target.time_against(probe, runs=0)


def test_executorch_threadpool_is_reset_only_when_its_size_changes(tmp_path, monkeypatch):
    pytest.importorskip("executorch")
    import torch
    from executorch.extension.pybindings import portable_lib

    from edgekit.export.lower import lower_module

    path = tmp_path / "m.pte"
    lower_module(torch.nn.Linear(4, 4), torch.randn(1, 4), "executorch", "fp32", path)
    size, resets = [3], []

    def reset(n):
        resets.append(n)
        size[0] = n

    # A stand-in pool of 3 threads: the real one is left as it is.
    monkeypatch.setattr(portable_lib, "_threadpool_get_thread_count", lambda: size[0])
    monkeypatch.setattr(portable_lib, "_unsafe_reset_threadpool", reset)
    for threads in (2, 2, 2, 3, 3):
        assert runtime.load(path, threads=threads).run(np.ones((1, 4), np.float32)).shape == (1, 4)
    assert resets == [2, 3]
