"""Width padding: the rule (widths.py), its exactness on the model (export/pad_widths.py), the
predictor pricing the padded architecture, and an ExecuTorch export of a pruned model."""
import pytest
import torch

from edgekit import zoo
from edgekit.arch import ConvLayer, LayerSpec, WaveformFrontend
from edgekit.export import export_model
from edgekit.export.pad_widths import pad_widths
from edgekit.export.prepare import ExportWrapper, prepare_module
from edgekit.models import build_model
from edgekit.widths import PAD_MULTIPLE, padded_conv_widths, padded_spec, round_up

SECONDS = 0.5
SAMPLES = 8000


def _pruned():
    return zoo.get_spec("tiny-pruned")  # conv widths 24/20/28/16/32/12/32, FFN 40/24/0


def test_rule_pads_inner_convs_and_ffns_only():
    spec = _pruned()
    out = padded_spec(spec, 16)
    assert [c.channels for c in out.frontend.layers] == [32, 32, 32, 16, 32, 16, 32]  # last conv kept
    assert [la.ffn_dim for la in out.layers] == [48, 32, 0]  # a pruned-away FFN stays away
    assert [la.heads for la in out.layers] == [la.heads for la in spec.layers]
    assert padded_conv_widths(spec.frontend, 16) == [(1, 32), (32, 32), (32, 32), (32, 16), (16, 32), (32, 16),
                                                     (16, 32)]
    assert padded_spec(out, 16) == out  # idempotent
    assert padded_spec(spec, None) is spec
    aligned = zoo.get_spec("tiny-hubert")  # 32-channel extractor, FFN 64: nothing to pad
    assert padded_spec(aligned, 16) is aligned
    # A per-frame LayerNorm after every conv would see the zero channels: not padded.
    layer_norm = spec.replace(frontend=WaveformFrontend(spec.frontend.layers, norm="layer"))
    assert padded_spec(layer_norm, 16).frontend == layer_norm.frontend
    assert round_up(17, 16) == 32 and round_up(16, 16) == 16 and round_up(0, 16) == 0


@pytest.mark.parametrize("norm,bias", [("group", False), ("none", True)])
def test_padding_is_exact_and_matches_the_rule(norm, bias):
    fe = WaveformFrontend(tuple(ConvLayer(c, k, s) for c, (k, s) in
                                zip((24, 20, 28, 12), [(10, 5), (3, 2), (3, 2), (2, 2)])), norm=norm, conv_bias=bias)
    spec = _pruned().replace(frontend=fe, layers=(LayerSpec(1, 40, 16), LayerSpec(2, 24, 16)))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    for p in model.parameters():  # non-trivial norms and biases: zeros must stay zeros anyway
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)
    wrapper = ExportWrapper(model, False)
    x = torch.randn(2, SAMPLES) * 0.1
    with torch.no_grad():
        ref = wrapper(x)
        padded = ExportWrapper(build_model(spec).eval(), False)
        padded.load_state_dict(wrapper.state_dict())
        n = pad_widths(padded, 16)
        out = padded(x)
    assert n == 3 + 2  # three inner convs and both FFNs
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    # The padded modules are exactly what the padded ArchSpec builds.
    want = {k: v.shape for k, v in build_model(padded_spec(spec, 16)).state_dict().items()}
    got = {k: v.shape for k, v in padded.encoder.state_dict().items()}
    assert got == want and padded.encoder.spec == padded_spec(spec, 16)


def test_prepare_pads_only_where_it_was_measured_to_pay():
    spec = _pruned()
    model = zoo.create_model("tiny-pruned")
    for fmt, multiple in PAD_MULTIPLE.items():
        w = prepare_module(model, spec, fmt=fmt, samples=SAMPLES)
        assert w.encoder.spec == padded_spec(spec, multiple)
    off = prepare_module(model, spec, fmt="executorch", samples=SAMPLES, pad=0)
    assert off.encoder.spec == spec
    assert model.spec == spec  # the caller's model is untouched


def test_predictor_prices_the_padded_architecture():
    from edgekit.latency import Predictor
    from edgekit.widths import PAD_REVISION

    from tests.test_search import tiny_table

    spec = _pruned()
    et = Predictor(tiny_table("fp32", "executorch", export_rewrites=PAD_REVISION))
    old = Predictor(tiny_table("fp32", "executorch", export_rewrites=PAD_REVISION - 1))
    onnx = Predictor(tiny_table("fp32", "onnx", export_rewrites=PAD_REVISION))
    padded = padded_spec(spec, 16)
    assert et.predict_ms(spec, SECONDS) == et.predict_ms(padded, SECONDS)
    assert et.explain(spec, SECONDS).predicted_ms == pytest.approx(et.predict_ms(spec, SECONDS))
    # Older tables priced what their export ran: unpadded widths; ONNX never pads.
    assert old.predict_ms(spec, SECONDS) < old.predict_ms(padded, SECONDS)
    assert onnx.predict_ms(spec, SECONDS) < onnx.predict_ms(padded, SECONDS)


def test_executorch_export_of_a_pruned_model_records_the_padding(tmp_path):
    name = "tiny-pruned"
    r = export_model(zoo.create_model(name), zoo.get_spec(name), "executorch", "int8", tmp_path, seconds=SECONDS,
                     source=name, calibration_count=4, parity_count=2)
    pad = r.manifest["padded_widths"]
    assert pad["multiple"] == 16 and pad["arch"] == padded_spec(zoo.get_spec(name), 16).to_dict()
    assert r.manifest["arch"] == zoo.get_spec(name).to_dict()  # the model as the user gave it
    assert r.manifest["parity"]["cosine_mean"] >= 0.99
    assert r.manifest["output"]["shape"] == [1, zoo.get_spec(name).output_frames(SAMPLES), 32]


def test_export_command_says_what_the_artifact_runs(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import main

    res = CliRunner().invoke(main, ["export", "tiny-pruned", "--format", "executorch", "--dtype", "fp32",
                                    "--seconds", str(SECONDS), "-o", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "padded to multiples of 16" in res.output
    assert padded_spec(zoo.get_spec("tiny-pruned"), 16).summary() in res.output
    res = CliRunner().invoke(main, ["export", "tiny-pruned", "--format", "onnx", "--dtype", "fp32",
                                    "--seconds", str(SECONDS), "-o", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0 and "padded" not in res.output
