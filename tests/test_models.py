import pytest
import torch

from edgekit import zoo
from edgekit.models import build_model

TINY = ["tiny-hubert", "tiny-distilhubert", "tiny-fithubert", "tiny-fbank", "tiny-pruned"]


@pytest.mark.parametrize("name", TINY + ["hubert-base", "distilhubert", "fithubert", "fast-hubert"])
def test_module_parameters_equal_the_analytic_count(name):
    spec = zoo.get_spec(name)
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.param_count()


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_follow_the_spec(name):
    spec = zoo.get_spec(name)
    model = zoo.create_model(name)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        out = model(wave, with_predictions=True)
    assert out.last_hidden_state.shape == (2, spec.output_frames(8000), spec.embed_dim)
    assert len(out.hidden_states) == spec.num_layers + 1
    assert [h.shape[1] for h in out.hidden_states[1:]] == spec.layer_frames(8000)
    if spec.heads is not None:
        assert out.predictions is not None and all(p.shape[-1] == spec.heads.target_dim for p in out.predictions)
        assert all(p.shape[1] == spec.num_frames(8000) for p in out.predictions)
    else:
        assert out.predictions is None


def test_prepare_for_export_folds_weight_norm_without_changing_output():
    model = zoo.create_model("tiny-hubert")
    wave = torch.randn(1, 8000)
    with torch.no_grad():
        before = model(wave).last_hidden_state
        model.prepare_for_export()
        after = model(wave).last_hidden_state
    assert model.pos_conv.folded
    assert not hasattr(model.pos_conv, "weight_g")
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_padding_mask_makes_padded_items_match_unpadded():
    # Group-norm extractors normalise over time, padding included (which is why HuBERT Base is
    # run without masks); a layer-norm extractor (wav2vec 2.0 Large style) is exact under masking.
    spec = zoo.get_spec("tiny-hubert")
    spec = spec.replace(frontend=spec.frontend.__class__(spec.frontend.layers, norm="layer"))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    short = torch.randn(1, 6000)
    padded = torch.cat([short, torch.zeros(1, 2000)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 8000)])
    with torch.no_grad():
        alone = model(short).last_hidden_state
        both = model(batch, lengths=torch.tensor([6000, 8000])).last_hidden_state
    frames = alone.shape[1]
    torch.testing.assert_close(both[0, :frames], alone[0], atol=1e-4, rtol=1e-4)


def test_filterbank_matches_a_direct_stft():
    model = zoo.create_model("tiny-fbank")
    fe = model.feature_extractor
    wave = torch.randn(1, 4000)
    spec = fe.spec
    window = torch.hann_window(spec.win_length, periodic=True)
    frames = wave.unfold(1, spec.win_length, spec.hop_length) * window
    power = torch.fft.rfft(frames, n=spec.n_fft).abs() ** 2
    expected = torch.log(power @ fe.mel + 1e-6)
    with torch.no_grad():
        got = fe.log_mel(wave)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-4)


def test_forward_is_exportable_with_torch_export():
    model = zoo.create_model("tiny-fithubert").prepare_for_export()
    ep = torch.export.export(model, (torch.randn(1, 8000),))
    out = ep.module()(torch.randn(1, 8000))
    assert out[0].shape == (1, 24, 24)


def test_layer_norm_first_applies_the_final_norm():
    spec = zoo.get_spec("tiny-hubert").replace(layer_norm_first=True)
    model = build_model(spec).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 8000))
    last = out.last_hidden_state
    torch.testing.assert_close(out.hidden_states[-1], last)
    mean = last.mean(-1)
    assert mean.abs().max() < 0.3  # a LayerNorm output (weight 1, bias 0 at init) is centred
