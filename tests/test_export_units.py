"""Fast unit tests of the export stages that do not lower anything."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgekit import zoo
from edgekit.errors import FormatError
from edgekit.export import manifest as mf
from edgekit.export.atomic import atomic_target, write_text_atomic
from edgekit.export.calibration import (SYNTHETIC_WARNING, calibration_inputs, parity_inputs, resample,
                                        synthetic_speech, windows)
from edgekit.export.lower import lower_module
from edgekit.export.parity import compare
from edgekit.export.prepare import (BmmAttention, DelegatedGroupNorm, DelegatedLayerNorm, LinearGroupNorm,
                                    LinearLayerNorm, prepare_module, quant_skip, rewrite_norms)
from edgekit.export.quantize import outside_modules
from edgekit.models.encoder import SelfAttention


def test_delegated_layer_norm_matches_layer_norm():
    ln = nn.LayerNorm(48)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(2, 7, 48) * 3 + 1
    torch.testing.assert_close(DelegatedLayerNorm(ln)(x), ln(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups", [16, 4])
def test_delegated_group_norm_matches_group_norm(groups):
    gn = nn.GroupNorm(groups, 16)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-1, 1)
    x = torch.randn(2, 16, 50) * 2
    torch.testing.assert_close(DelegatedGroupNorm(gn)(x), gn(x), atol=1e-5, rtol=1e-5)


def test_linear_norms_match_torch_norms():
    ln = nn.LayerNorm(48)
    gn = nn.GroupNorm(4, 16)
    with torch.no_grad():
        for m in (ln, gn):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-1, 1)
    x = torch.randn(2, 7, 48) * 3 + 1
    torch.testing.assert_close(LinearLayerNorm(ln)(x), ln(x), atol=1e-5, rtol=1e-5)
    y = torch.randn(2, 16, 50) * 2
    torch.testing.assert_close(LinearGroupNorm(gn, 50)(y), gn(y), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="built for"):
        LinearGroupNorm(gn, 50)(torch.randn(2, 16, 49))


def test_rewrite_norms_styles_and_refusals():
    def net():
        return nn.Sequential(nn.Conv1d(1, 8, 3), nn.GroupNorm(8, 8), nn.Flatten(1), nn.LayerNorm(8 * 18))

    x = torch.randn(2, 1, 20)
    m = net()
    assert rewrite_norms(m, layer_norm="linear", group_norm="none") == 1
    assert isinstance(m[3], LinearLayerNorm) and isinstance(m[1], nn.GroupNorm)
    m = net()
    assert rewrite_norms(m, layer_norm="pool", group_norm="linear", example=x) == 2
    assert isinstance(m[1], LinearGroupNorm) and m[1].frames == 18 and isinstance(m[3], DelegatedLayerNorm)
    with pytest.raises(ValueError, match="needs an example"):
        rewrite_norms(net(), group_norm="linear")
    with pytest.raises(ValueError, match="layer_norm='matmul'"):
        rewrite_norms(net(), layer_norm="matmul")


def test_int8_filter_leaves_norm_arithmetic_fp32():
    wrapper = prepare_module(zoo.create_model("tiny-hubert"), zoo.get_spec("tiny-hubert"))
    graph = torch.export.export(wrapper, (torch.randn(1, 4000),), strict=False).graph
    keep = outside_modules(())
    ops = {n: keep(n) for n in graph.nodes if n.op == "call_function"}
    norm_ops = [n for n in ops if "rsqrt" in str(n.target)]
    linears = [n for n in ops if "linear" in str(n.target) and "avg" not in str(n.args[1])]
    assert norm_ops and not any(ops[n] for n in norm_ops)  # inside a norm: not annotated
    assert linears and all(ops[n] for n in linears)
    fe = outside_modules(("encoder.feature_extractor",))
    assert not any(fe(n) for n in ops if "conv1d" in str(n.target) and "feature_extractor" in str(n.meta))


def test_bmm_attention_matches_self_attention():
    attn = SelfAttention(32, heads=4, head_dim=8)
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(BmmAttention(attn)(x), attn(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-hubert", "tiny-fbank", "tiny-pruned", "tiny-fithubert"])
def test_prepare_module_matches_model_and_folds_weight_norm(name):
    model = zoo.create_model(name)
    wrapper = prepare_module(model, zoo.get_spec(name))
    x = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), model(x).last_hidden_state, atol=1e-5, rtol=1e-4)
    assert wrapper.encoder.pos_conv.folded and not model.pos_conv.folded  # caller's model untouched
    assert wrapper.encoder.heads is None
    assert not any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for m in wrapper.modules())


def test_prepare_keep_heads_stacks_predictions_and_refuses_headless():
    model = zoo.create_model("tiny-distilhubert")
    out = prepare_module(model, zoo.get_spec("tiny-distilhubert"), keep_heads=True)(torch.randn(1, 8000))
    assert out.shape == (1, 3, 24, 32)
    with pytest.raises(ValueError, match="no prediction heads"):
        prepare_module(zoo.create_model("tiny-hubert"), zoo.get_spec("tiny-hubert"), keep_heads=True)


def test_quant_skip_keeps_filterbank_and_last_waveform_conv_fp32():
    assert quant_skip(zoo.get_spec("tiny-fbank")) == ("encoder.feature_extractor",)
    spec = zoo.get_spec("tiny-hubert")
    last = len(spec.frontend.layers) - 1
    assert quant_skip(spec) == (f"encoder.feature_extractor.conv_layers.{last}",)
    # The name holds in both extractor forms, so every format keeps the same conv fp32.
    for fmt in ("onnx", "executorch"):
        wrapper = prepare_module(zoo.create_model("tiny-hubert"), spec, fmt=fmt, samples=4000)
        assert wrapper.get_submodule(quant_skip(spec)[0]) is not None


def test_lower_module_refuses_bad_arguments(tmp_path):
    m = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="format 'coreml'"):
        lower_module(m, torch.randn(1, 4), "coreml", "fp32", tmp_path / "m.x")
    with pytest.raises(ValueError, match="dtype 'int4'"):
        lower_module(m, torch.randn(1, 4), "onnx", "int4", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="static int8 needs calibration"):
        lower_module(m, torch.randn(1, 4), "onnx", "int8", tmp_path / "m.onnx", quant="static")
    assert list(tmp_path.iterdir()) == []


def test_parity_compare_thresholds():
    ref = np.random.default_rng(0).standard_normal((1, 10, 8)).astype(np.float32)
    ok = compare([ref], [ref + 1e-6], "fp32")
    assert ok.passed and ok.rel_err < 1e-4 and ok.cosine_mean > 0.9999
    bad = compare([ref], [ref + 0.01], "fp32")
    assert not bad.passed and bad.rel_err > 1e-4
    noisy = ref + 0.05 * np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    assert compare([ref], [noisy], "int8").passed
    assert not compare([ref], [-ref], "int8").passed


def test_calibration_windows_resample_and_synthetic(tmp_path):
    sf = pytest.importorskip("soundfile")
    assert [len(w) for w in windows(np.ones(2600), 1000)] == [1000, 1000, 1000]  # 600 tail padded
    assert len(windows(np.ones(2300), 1000)) == 2  # 300 tail dropped
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    up = resample(tone, 8000, 16000)
    assert len(up) == 16000 and abs(np.abs(up).max() - 1) < 0.02
    syn = synthetic_speech(4000, 3, seed=0)
    assert len(syn) == 3 and all(0.01 < np.sqrt(np.mean(s ** 2)) < 0.2 for s in syn)
    np.testing.assert_array_equal(syn[0], synthetic_speech(4000, 1, seed=0)[0])
    inputs, desc, warns = calibration_inputs(4000, None, count=2)
    assert warns == [SYNTHETIC_WARNING] and inputs[0].shape == (1, 4000)
    sf.write(tmp_path / "a.wav", (tone * 0.1).astype(np.float32), 8000)
    inputs, desc, warns = calibration_inputs(4000, tmp_path, count=8)
    assert warns == [] and len(inputs) == 4 and "a.wav" not in desc
    held = parity_inputs(4000, 3)
    assert len(held) == 3 and not torch.equal(held[0], inputs[0])


def test_atomic_target_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_target(tmp_path / "x.onnx") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_manifest_merges_entries_and_refuses_foreign_json(tmp_path):
    mf.add_entry(tmp_path, "a.pte", {"format": "executorch"})
    mf.add_entry(tmp_path, "a.onnx", {"format": "onnx"})
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert set(data["artifacts"]) == {"a.pte", "a.onnx"} and data["edgekit_manifest"] == 1
    assert mf.entry_for(tmp_path / "a.onnx") == {"format": "onnx"}
    write_text_atomic(tmp_path / "manifest.json", "[1, 2]")
    with pytest.raises(FormatError, match="not an edgekit manifest"):
        mf.read_manifest(tmp_path)


class _Warns(nn.Module):
    """Warns while it is traced: once with torch's LeafSpec deprecation, once with another."""

    def forward(self, x):
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
                      "treespec.is_leaf()` instead.", FutureWarning)
        warnings.warn("a warning of the user's own model", UserWarning)
        return x * 2


def test_lowering_silences_only_torchs_leafspec_deprecation(tmp_path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lower_module(_Warns(), torch.randn(1, 4), "executorch", "fp32", tmp_path / "m.pte")
    messages = [str(w.message) for w in seen]
    assert not any("LeafSpec" in m for m in messages)
    assert "a warning of the user's own model" in messages
    # The filter is lowering's own: outside it the warning shows again.
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        _Warns()(torch.ones(1))
    assert any("LeafSpec" in str(w.message) for w in after)
