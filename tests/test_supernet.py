"""LightHuBERT supernet: elastic forward vs extracted standalone models, the slicing rules,
presets, `inspect --subnet`, and the LightHuBERT checkpoint importer."""
from __future__ import annotations

import random

import pytest
import torch
from click.testing import CliRunner

from edgekit import zoo
from edgekit.arch import ConvLayer, WaveformFrontend
from edgekit.cli import main
from edgekit.convert.lighthubert import key_map, load_lighthubert, looks_like_lighthubert
from edgekit.errors import FormatError, UserError
from edgekit.models import build_model
from edgekit.space import Subnet, SupernetShape, get_space, tiny_shape
from edgekit.supernet import (LightHubertSupernet, extract, ffn_index, subnet_spec_for_preset,
                              supernet_param_shapes)

ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine's 2 cores are shared: more threads only add contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values everywhere (LayerNorm gains and biases too), so a wrong slice shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if ("norm" in name or name.endswith("bias")) else 0.15
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if name.endswith("norm.weight") else 0.0))
    return module.eval()


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    return _randomise(LightHubertSupernet("tiny-supernet"))


@pytest.fixture(scope="module")
def wave():
    return torch.randn(2, 6400, generator=torch.Generator().manual_seed(1))


def _max_diff(a, b) -> float:
    assert len(a.hidden_states) == len(b.hidden_states)
    return max((x - y).abs().max().item() for x, y in zip(a.hidden_states, b.hidden_states))


def _standalone(net, sub):
    spec, sd = extract(net, sub)
    model = build_model(spec)
    model.load_state_dict(sd, strict=True)
    return spec, model.eval()


def test_parameter_names_match_speech_encoder_one_to_one(tiny_net):
    full = build_model(tiny_net.shape.full_arch())
    ours = {k: tuple(v.shape) for k, v in tiny_net.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert ours == supernet_param_shapes(tiny_net.shape)
    # A full-size state dict therefore loads strictly, and the largest subnet is that model.
    _randomise(full, seed=5)
    net = LightHubertSupernet("tiny-supernet")
    net.load_state_dict(full.state_dict(), strict=True)
    net.set_subnet("max")
    x = torch.randn(1, 4000)
    with torch.no_grad():
        assert _max_diff(net(x), full(x)) < ATOL


def test_elastic_forward_matches_extracted_models(tiny_net, wave):
    space = tiny_net.space
    rng = random.Random(0)
    subs = [space.sample(rng) for _ in range(6)] + [space.smallest(), space.default,
                                                    Subnet(48, 3, (2, 4, 3), (168, 144, 192))]
    for sub in subs:
        tiny_net.set_subnet(sub)
        spec, model = _standalone(tiny_net, sub)
        assert spec.param_count() == sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            out, ref = tiny_net(wave), model(wave)
        assert len(out.hidden_states) == sub.depth + 1
        assert out.last_hidden_state.shape == (2, spec.num_frames(6400), sub.embed_dim)
        assert _max_diff(out, ref) < ATOL, sub


def test_elastic_forward_with_padding_lengths(tiny_net, wave):
    sub = Subnet(64, 2, (3, 4), (224, 256))
    tiny_net.set_subnet(sub)
    _, model = _standalone(tiny_net, sub)
    lengths = torch.tensor([6400, 4000])
    with torch.no_grad():
        assert _max_diff(tiny_net(wave, lengths), model(wave, lengths)) < ATOL


def test_ffn_chunk_slicing_rule():
    base = SupernetShape()
    # E=640, F=2560: 4 chunks of 640 rows at the starts of the 768-row chunks.
    rows = ffn_index(base, 640, 2560)
    assert rows == [r for c in range(4) for r in range(c * 768, c * 768 + 640)]
    # E=768, ratio 3.5: 768 + 768 + 768 + 384.
    assert ffn_index(base, 768, 2688) == list(range(2304)) + list(range(2304, 2304 + 384))
    # The tiny supernet: E=48, ratio 3.5 -> 48 + 48 + 48 + 24 out of chunks of 64.
    assert ffn_index(tiny_shape(), 48, 168) == (list(range(0, 48)) + list(range(64, 112)) + list(range(128, 176))
                                                + list(range(192, 216)))


def test_extract_applies_published_slices(tiny_net):
    sub = Subnet(48, 2, (3, 2), (168, 144))
    spec, sd = extract(tiny_net, sub)
    full = tiny_net.state_dict()
    keep = tiny_net.shape.keep_map(2)
    assert keep == (0, 2)
    src = f"layers.{keep[1]}."
    assert torch.equal(sd["layers.1.attention.q_proj.weight"], full[src + "attention.q_proj.weight"][:32, :48])
    assert torch.equal(sd["layers.1.attention.out_proj.weight"], full[src + "attention.out_proj.weight"][:48, :32])
    assert torch.equal(sd["layers.1.final_layer_norm.bias"], full[src + "final_layer_norm.bias"][:48])
    rows = torch.tensor(ffn_index(tiny_net.shape, 48, 168))
    w1 = full["layers.0.feed_forward.intermediate_dense.weight"]
    assert torch.equal(sd["layers.0.feed_forward.intermediate_dense.weight"], w1[rows][:, :48])
    w2 = full["layers.0.feed_forward.output_dense.weight"]
    assert torch.equal(sd["layers.0.feed_forward.output_dense.weight"], w2[:48][:, rows])
    assert torch.equal(sd["projection.weight"], full["projection.weight"][:48])
    # Positional conv: weight norm folded over the FULL weight first, then W[:E, :E/16... groups].
    g, v = full["pos_conv.weight_g"], full["pos_conv.weight_v"]
    folded = g * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    assert torch.allclose(sd["pos_conv.weight"], folded[:48, :12, :])
    v_s = v[:48, :12, :]
    renormalised_after = g * v_s / v_s.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    assert not torch.allclose(sd["pos_conv.weight"], renormalised_after)
    assert spec.pos_conv.weight_norm is False and spec.pos_conv.groups == 4
    assert "mask_emb" not in sd


def test_extract_from_state_dict_is_strict(tiny_net):
    sd = tiny_net.state_dict()
    spec, out = extract(sd, "default", space="tiny-supernet")
    assert spec == get_space("tiny-supernet").to_arch(get_space("tiny-supernet").default)
    bad = dict(sd)
    bad["layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(FormatError, match="unknown 1 key.*layers.0.extra.weight"):
        extract(bad, "default", space="tiny-supernet")
    bad = {k: v for k, v in sd.items() if k != "layers.3.attention.k_proj.bias"}
    with pytest.raises(FormatError, match="missing 1 key.*layers.3.attention.k_proj.bias"):
        extract(bad, "default", space="tiny-supernet")
    bad = dict(sd)
    bad["projection.weight"] = torch.zeros(64, 31)
    with pytest.raises(FormatError, match=r"projection.weight \(64, 31\) != \(64, 32\)"):
        extract(bad, "default", space="tiny-supernet")
    with pytest.raises(UserError, match=r"subnet.embed_dim=40"):
        extract(sd, {"embed_dim": 40, "depth": 4, "heads": 2, "ffn_ratios": 3.0}, space="tiny-supernet")


def test_set_subnet_validates(tiny_net):
    with pytest.raises(UserError, match=r"subnet\.heads\[1\]=5 .*allowed \[2, 3, 4\]"):
        tiny_net.set_subnet(Subnet(64, 2, (2, 5), (192, 192)))
    sub = tiny_net.sample_subnet(random.Random(4))
    assert tiny_net.active_subnet == sub and tiny_net.active_arch().embed_dim == sub.embed_dim


def test_full_size_default_subnets_match_extracted_models():
    torch.manual_seed(0)
    net = LightHubertSupernet(SupernetShape()).eval()  # HuBERT Base shaped, serves both spaces
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(2))
    for name in ("lighthubert-base", "lighthubert-small"):
        space = get_space(name)
        net.set_subnet(space.default)
        spec, sd = extract(net, space.default, space=space)
        model = build_model(spec)
        model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            assert _max_diff(net(wave), model.eval()(wave)) < ATOL
        assert spec == zoo.get_spec(name).replace(name=spec.name)
        del model, sd


def test_presets_and_subnet_specs():
    assert abs(zoo.get_spec("lighthubert-base").param_count() - 66_890_880) / 66_890_880 < 1e-3
    assert abs(zoo.get_spec("lighthubert-small").param_count() - 26_872_960) / 26_872_960 < 1e-3
    stage1 = zoo.get_spec("lighthubert-stage1")
    assert stage1.embed_dim == 768 and stage1.num_layers == 12 and {layer.ffn_dim for layer in stage1.layers} == {3072}
    assert abs(stage1.param_count() - zoo.get_spec("hubert-base").param_count()) <= 768 + 128  # no mask_emb, folded g
    assert "tiny-supernet" in zoo.list_presets("tiny-*") and "tiny-supernet" not in zoo.list_presets(include_tiny=False)
    spec = subnet_spec_for_preset("lighthubert-small", {"embed_dim": 256, "depth": 10, "heads": 4, "ffn_ratios": 3.0})
    assert spec.num_layers == 10 and spec.embed_dim == 256
    assert subnet_spec_for_preset("lighthubert-base", "max").embed_dim == 768
    with pytest.raises(UserError, match="'hubert-base' is not a supernet"):
        subnet_spec_for_preset("hubert-base", "default")
    with pytest.raises(zoo.UnknownPresetError):
        subnet_spec_for_preset("lighthubert-tiny", "default")


def test_inspect_cli_with_subnet():
    runner = CliRunner()
    res = runner.invoke(main, ["inspect", "lighthubert-small", "--subnet",
                               '{"embed_dim": 256, "depth": 10, "heads": 4, "ffn_ratios": 3.0}'])
    assert res.exit_code == 0, res.output
    assert "10 layers x 256, heads 4, ffn 768" in res.output
    assert "parameters: 11,442,176" in res.output
    res = runner.invoke(main, ["inspect", "tiny-hubert", "--subnet", "default"])
    assert res.exit_code == 1 and "is not a supernet" in res.output
    res = runner.invoke(main, ["inspect", "lighthubert-small", "--subnet", '{"embed_dim": 300, "depth": 10, '
                                                                       '"heads": 4, "ffn_ratios": 3.0}'])
    assert res.exit_code == 1 and "subnet.embed_dim=300" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- LightHuBERT checkpoints

_TINY_CFG = {"_name": "student_hubert", "supernet_type": "small", "extractor_mode": "default",
             "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2", "conv_bias": False,
             "encoder_embed_dim": 64, "encoder_attention_heads": 4, "encoder_ffn_embed_dim": 256,
             "encoder_layers": 4, "conv_pos": 16, "conv_pos_groups": 4, "layer_norm_first": False,
             "layer_pred_num": "0,0,0,1", "teacher_embed_dim": 768}


def _fake_checkpoint(net: LightHubertSupernet, cfg: dict) -> dict:
    sd = net.state_dict()
    model = {src: sd[dst].clone() for src, dst in key_map(net.shape).items()}
    model["layer_pred_heads.3.weight"] = torch.randn(768, 64)
    return {"cfg": {"model": dict(cfg)}, "model": model}


def test_load_lighthubert_checkpoint_file(tiny_net, wave, tmp_path):
    ckpt = _fake_checkpoint(tiny_net, _TINY_CFG)
    path = tmp_path / "lighthubert_tiny.pt"
    torch.save(ckpt, path)
    assert looks_like_lighthubert(ckpt)
    plain = {"cfg": {"model": {"_name": "hubert"}},
             "model": {k: v for k, v in ckpt["model"].items() if not k.startswith("layer_pred_heads.")}}
    assert not looks_like_lighthubert(plain) and not looks_like_lighthubert({"state_dict": {}})
    space = get_space("tiny-supernet")
    for subnet in ("default", "min", {"embed_dim": 64, "depth": 3, "heads": [4, 2, 3], "ffn_ratios": [4.0, 3.0, 3.5]}):
        model, spec = load_lighthubert(str(path), subnet, space="tiny-supernet")
        sub = space.resolve(subnet)
        tiny_net.set_subnet(sub)
        with torch.no_grad():
            assert _max_diff(tiny_net(wave), model(wave)) < ATOL
        assert spec == space.to_arch(sub)
    # An ArchSpec picks the subnet too.
    model, spec2 = load_lighthubert(ckpt, spec, space="tiny-supernet")
    assert spec2 == spec


def test_load_lighthubert_layer_norm_extractor(wave):
    fe = WaveformFrontend(tuple(ConvLayer(32, k, s) for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2),
                          norm="layer", conv_bias=True)
    shape = SupernetShape(frontend=fe, embed_dim=64, heads=4, head_dim=16, ffn_dim=256, layers=4, pos_conv_kernel=16,
                          pos_conv_groups=4, keep_maps=tiny_shape().keep_maps)
    net = _randomise(LightHubertSupernet(shape), seed=3)
    ckpt = _fake_checkpoint(net, {**_TINY_CFG, "extractor_mode": "layer_norm", "conv_bias": True})
    assert "feature_extractor.conv_layers.6.2.1.weight" in ckpt["model"]
    sub = Subnet(32, 2, (2, 4), (96, 128))
    model, spec = load_lighthubert(ckpt, sub, space="tiny-supernet")
    net.set_subnet(sub)
    with torch.no_grad():
        assert _max_diff(net(wave), model(wave)) < ATOL
    assert spec.frontend.norm == "layer"


def test_load_lighthubert_is_strict(tiny_net):
    ckpt = _fake_checkpoint(tiny_net, _TINY_CFG)
    extra = {**ckpt, "model": {**ckpt["model"], "encoder.layers.0.adapter.weight": torch.zeros(3)}}
    with pytest.raises(FormatError, match="does not understand: encoder.layers.0.adapter.weight"):
        load_lighthubert(extra, "default", space="tiny-supernet")
    missing = {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if k != "encoder.layers.2.fc1.bias"}}
    with pytest.raises(FormatError, match="missing from the checkpoint: encoder.layers.2.fc1.bias"):
        load_lighthubert(missing, "default", space="tiny-supernet")
    wrong = {**ckpt, "cfg": {"model": {**_TINY_CFG, "encoder_ffn_embed_dim": 192}}}
    with pytest.raises(FormatError, match=r"shape mismatch.*encoder.layers.0.fc1.bias \(256,\) vs \(192,\)"):
        load_lighthubert(wrong, "default", space="tiny-supernet")
    with pytest.raises(FormatError, match="no cfg"):
        load_lighthubert({"model": ckpt["model"]}, "default")
    with pytest.raises(FormatError, match="pos_conv_depth=2"):
        load_lighthubert({**ckpt, "cfg": {"model": {**_TINY_CFG, "pos_conv_depth": 2}}}, "default",
                         space="tiny-supernet")
    with pytest.raises(UserError, match=r"subnet.depth=1 "):
        load_lighthubert(ckpt, {"embed_dim": 64, "depth": 1, "heads": 4, "ffn_ratios": 4.0}, space="tiny-supernet")
