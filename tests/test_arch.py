import json

import pytest

from edgekit import zoo
from edgekit.arch import (ArchSpec, ConvLayer, DistillHeads, FilterbankFrontend, LayerSpec, PosConv,
                          TimeReduction, WaveformFrontend, blocks, hubert_frontend, uniform_layers)

# Published / computed counts from shared/reference/models.md; tolerance 0.1% (exact where computed).
EXPECTED_PARAMS = {
    "hubert-base": 94_371_712,
    "distilhubert": 23_491_200,
    "fithubert": 22_492_064,
}


@pytest.mark.parametrize("name,expected", sorted(EXPECTED_PARAMS.items()))
def test_param_counts_match_models_md(name, expected):
    assert zoo.get_spec(name).param_count() == expected


def test_fast_hubert_about_93_2m_without_heads():
    n = zoo.get_spec("fast-hubert").param_count(include_heads=False)
    assert abs(n - 93.2e6) / 93.2e6 < 0.001


def test_fithubert_backbone_about_21_2m():
    spec = zoo.get_spec("fithubert")
    backbone = spec.param_count(include_heads=False) - next(b.params for b in blocks(spec, 1) if b.name == "upsample")
    assert abs(backbone - 21.20e6) / 21.20e6 < 0.001


@pytest.mark.parametrize("name,gmac,conv_gmac", [
    ("hubert-base", 74, 24.5), ("distilhubert", 35, 24.5), ("fithubert", 14, None), ("fast-hubert", 25, None),
])
def test_macs_for_10_seconds_match_models_md(name, gmac, conv_gmac):
    spec = zoo.get_spec(name)
    assert spec.mac_count(10.0) / 1e9 == pytest.approx(gmac, rel=0.02)
    if conv_gmac is not None:
        conv = sum(b.macs for b in blocks(spec, 10.0) if b.name.startswith("frontend."))
        assert conv / 1e9 == pytest.approx(conv_gmac, rel=0.01)


def test_frames_follow_the_conv_formula():
    fe = hubert_frontend()
    assert fe.num_frames(16000) == 49
    assert fe.stride == 320
    assert fe.min_samples() == 400
    assert fe.num_frames(399) == 0 and fe.num_frames(400) == 1


def test_filterbank_frontend_runs_at_25_hz():
    spec = zoo.get_spec("fast-hubert")
    assert spec.frontend.num_fbank_frames(16000) == 98
    assert spec.num_frames(16000) == 25
    assert spec.frame_rate_hz() == 25


def test_time_reduction_halves_layer_frames_and_upsample_restores_output():
    spec = zoo.get_spec("fithubert")
    assert spec.layer_frames(16000) == [25] * 12
    assert spec.output_frames(16000) == 49
    no_up = spec.replace(time_reduction=TimeReduction(before_layer=3, factor=2, upsample=False), heads=None)
    assert no_up.layer_frames(16000) == [49] * 3 + [25] * 9
    assert no_up.output_frames(16000) == 25


@pytest.mark.parametrize("name", zoo.list_presets())
def test_json_round_trip_every_preset(name):
    spec = zoo.get_spec(name)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(again.to_json()) == json.loads(spec.to_json())


def test_validation_names_field_value_and_allowed():
    with pytest.raises(ValueError, match=r"frontend.norm='batch' is invalid: expected one of group, layer, none"):
        WaveformFrontend((ConvLayer(8, 3, 2),), norm="batch")
    with pytest.raises(ValueError, match=r"pos_conv.groups=5 is invalid: must divide embed_dim \(32\)"):
        ArchSpec(hubert_frontend(8), 32, uniform_layers(1, 2, 16, 16), pos_conv=PosConv(16, 5))
    with pytest.raises(ValueError, match=r"layer.heads=-1"):
        LayerSpec(heads=-1, ffn_dim=8)
    with pytest.raises(ValueError, match=r"frontend.subsampler.channels=7 is invalid: must be even"):
        FilterbankFrontend(subsampler=(ConvLayer(7, 5, 2),))
    with pytest.raises(ValueError, match=r"time_reduction.before_layer=2 is invalid: must be < number of layers \(2\)"):
        ArchSpec(hubert_frontend(8), 32, uniform_layers(2, 2, 16, 16), pos_conv=PosConv(16, 4),
                 time_reduction=TimeReduction(before_layer=2))


def test_from_dict_refuses_unknown_keys_and_bad_schema():
    data = zoo.get_spec("tiny-hubert").to_dict()
    data["layers"][0]["head"] = 3
    with pytest.raises(ValueError, match=r"arch.layers\[0\]: unknown key\(s\) head"):
        ArchSpec.from_dict(data)
    data = zoo.get_spec("tiny-hubert").to_dict()
    data["schema"] = "edgekit.arch/99"
    with pytest.raises(ValueError, match="schema='edgekit.arch/99' is not supported"):
        ArchSpec.from_dict(data)
    data = zoo.get_spec("tiny-hubert").to_dict()
    data["frontend"]["type"] = "spectrogram"
    with pytest.raises(ValueError, match=r"arch.frontend.type='spectrogram' is invalid"):
        ArchSpec.from_dict(data)


def test_pruned_layers_cost_nothing_for_removed_blocks():
    spec = zoo.get_spec("tiny-pruned")
    rows = {b.name: b for b in blocks(spec, 1.0)}
    assert rows["layer1.attention"].macs == 0
    assert rows["layer1.attention"].params == 2 * 32  # only its LayerNorm remains
    assert rows["layer2.ffn"].macs == 0


def test_attention_macs_include_the_quadratic_term():
    spec = ArchSpec(hubert_frontend(8), 64, (LayerSpec(heads=2, ffn_dim=0, head_dim=16),), pos_conv=None)
    t = spec.num_frames(16000)
    attn = next(b for b in blocks(spec, 1.0) if b.name == "layer0.attention")
    assert attn.macs == 4 * t * 64 * 32 + 2 * t * t * 32


def test_heads_are_training_only_in_counts():
    spec = zoo.get_spec("distilhubert-heads")
    base = zoo.get_spec("distilhubert")
    assert spec.param_count(include_heads=False) == base.param_count()
    assert spec.param_count() - base.param_count() == 768 * 2304 + 2304 + 3 * (768 * 768 + 768)
    assert spec.mac_count(1.0) == base.mac_count(1.0)
    assert isinstance(spec.heads, DistillHeads)
