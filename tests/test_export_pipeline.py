"""End to end: tiny presets through every format and dtype, the parity gate, the manifest,
failure paths that must leave nothing behind, and `edgekit run` on a real wav file.

Lowering is slow (TFLite conversion most of all), so each artifact is built once per module
and the matrix is spread over the tiny presets: fp32 x all formats on tiny-hubert (shared by
the `edgekit run` test), int8 with ExecuTorch on tiny-fbank (filterbank kept fp32), ONNX on
tiny-pruned, TFLite on tiny-hubert; one ONNX static export that must fail the gate. The
interrupted-write test fakes the lowering: it tests the cleanup, not the toolchain.
"""
import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgekit import runtime, zoo
from edgekit.cli import main
from edgekit.export import export_model
from edgekit.export.manifest import sha256_file
from edgekit.export.prepare import quant_skip

sf = pytest.importorskip("soundfile")
SECONDS = 0.5
SAMPLES = 8000


def _invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32")
    res = _invoke(["export", "tiny-hubert", "--format", "all", "--dtype", "fp32", "--seconds", str(SECONDS),
                   "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def _torch_out(name, x):
    with torch.no_grad():
        return zoo.create_model(name)(torch.from_numpy(x)).last_hidden_state.numpy()


def test_fp32_all_formats_match_pytorch_and_manifest(fp32_dir):
    out, printed = fp32_dir
    manifest = json.loads((out / "manifest.json").read_text())
    names = {"tiny-hubert-fp32.pte", "tiny-hubert-fp32.onnx", "tiny-hubert-fp32.tflite"}
    assert set(manifest["artifacts"]) == names == {p["artifact"] for p in printed}
    assert sorted(p.name for p in out.iterdir()) == sorted(names | {"manifest.json"})
    x = np.random.default_rng(3).standard_normal((1, SAMPLES)).astype(np.float32) * 0.1
    ref = _torch_out("tiny-hubert", x)
    spec = zoo.get_spec("tiny-hubert")
    for name, entry in manifest["artifacts"].items():
        path = out / name
        y = runtime.load(path).run(x)
        assert np.abs(y - ref).max() / np.abs(ref).max() <= 1e-4, name
        assert entry["parity"]["passed"] and entry["parity"]["rel_err"] <= 1e-4
        assert entry["sha256"] == sha256_file(path) and entry["size_bytes"] == path.stat().st_size
        assert entry["input"]["samples"] == SAMPLES and entry["input"]["sample_rate"] == 16000
        assert entry["output"]["shape"] == [1, spec.output_frames(SAMPLES), 32] == list(y.shape)
        assert entry["arch"] == spec.to_dict() and entry["source"] == {"kind": "preset", "name": "tiny-hubert"}
        assert entry["dtype"] == "fp32" and entry["quantization"] is None and "torch" in entry["tools"]
    pte = manifest["artifacts"]["tiny-hubert-fp32.pte"]["delegation"]
    # prepare's defaults (bmm attention, both norms as 4-D means, the channels-last conv
    # extractor) keep the whole encoder in one XNNPACK partition (benchmarks/norm_rewrites.py).
    assert pte["partitions"] == 1 and pte["delegated_fraction"] > 0.98


def test_executorch_runner_keeps_torch_threads_off_the_run(fp32_dir):
    # The bindings clone outputs with torch; a multi-threaded clone leaves an OpenMP worker
    # spinning on a core XNNPACK needs (runners.ExecuTorchRunner._run).
    out, _ = fp32_dir
    runner = runtime.load(out / "tiny-hubert-fp32.pte", threads=2)
    seen = []

    class Recording:
        def __init__(self, method):
            self.method = method

        def execute(self, inputs):
            seen.append(torch.get_num_threads())
            return self.method.execute(inputs)

    runner._method = Recording(runner._method)
    before = torch.get_num_threads()
    x = np.zeros((1, SAMPLES), dtype=np.float32)
    assert runner.run(x).shape[0] == 1
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("name,fmt", [("tiny-fbank", "executorch"), ("tiny-pruned", "onnx"),
                                      ("tiny-hubert", "tflite")])
def test_int8_passes_cosine_gate(tmp_path, name, fmt):
    r = export_model(zoo.create_model(name), zoo.get_spec(name), fmt, "int8", tmp_path, seconds=SECONDS,
                     source=name, calibration_count=4, parity_count=2)
    x = np.random.default_rng(4).standard_normal((1, SAMPLES)).astype(np.float32) * 0.05
    y, ref = runtime.load(r.artifact_path).run(x), _torch_out(name, x)
    cos = (y * ref).sum(-1) / np.linalg.norm(y, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.mean() >= 0.98  # a fresh input, not one the gate saw
    q = r.manifest["quantization"]
    assert r.manifest["parity"]["cosine_mean"] >= 0.99 and q["mode"] in ("static", "dynamic")
    assert q["kept_fp32"] == list(quant_skip(zoo.get_spec(name)))


def test_broken_quantization_fails_gate_and_leaves_nothing(tmp_path):
    # Calibrating static int8 on near-silence sets activation ranges ~1e-6: real input saturates.
    cal = tmp_path / "cal"
    cal.mkdir()
    sf.write(cal / "silence.wav", np.full(16000, 1e-6, dtype=np.float32), 16000)
    out = tmp_path / "out"
    res = _invoke(["export", "tiny-pruned", "--format", "onnx", "--dtype", "int8", "--quant", "static",
                   "--calibration", str(cal), "--seconds", str(SECONDS), "-o", str(out)])
    assert res.exit_code == 1
    assert "parity gate failed for onnx int8" in res.output and "suspect stage: quantize" in res.output
    assert "cosine mean" in res.output and len(res.output.strip().splitlines()) == 1
    assert list(out.iterdir()) == []


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    import edgekit.export.pipeline as pipeline

    def lowered_then_interrupted(module, example, fmt, dtype, path, **kw):
        path.write_bytes(b"half an artifact")  # the lowering had written its temp file
        raise KeyboardInterrupt

    # No real lowering: what is under test is the cleanup around it, not the toolchain.
    monkeypatch.setattr(pipeline, "lower_module", lowered_then_interrupted)
    out = tmp_path / "out"
    res = _invoke(["export", "tiny-pruned", "--format", "onnx", "--seconds", str(SECONDS), "-o", str(out)])
    assert res.exit_code == 130 and "nothing half-written" in res.output
    assert list(out.iterdir()) == []


def test_missing_toolchain_gives_one_line_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    res = _invoke(["export", "tiny-pruned", "--format", "onnx", "-o", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.output.strip() == 'Error: onnxscript is not installed; install it with: pip install "edgekit[onnx]"'


def test_run_on_wav_file(fp32_dir, tmp_path):
    out, _ = fp32_dir
    wav = tmp_path / "speech.wav"
    rng = np.random.default_rng(5)
    stereo = (rng.standard_normal((int(1.3 * 22050), 2)) * 0.05).astype(np.float32)
    sf.write(wav, stereo, 22050)  # resampled to 16 kHz, mixed to mono: 20800 samples
    emb_path = tmp_path / "emb.npy"
    art = out / "tiny-hubert-fp32.onnx"
    res = _invoke(["run", str(art), "--audio", str(wav), "--out", str(emb_path), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    frames = zoo.get_spec("tiny-hubert").output_frames(SAMPLES)
    assert info["windows"] == 3 and info["frames"] == 3 * frames  # 2 full windows + padded 4800 tail
    emb = np.load(emb_path)
    assert emb.shape == (3 * frames, 32) and np.isfinite(emb).all()
