"""fairseq HuBERT checkpoints: a tiny fake in the real layout ({'cfg': {'model': ...}, 'model': ...}
with Sequential conv blocks, post_extract_proj, encoder.pos_conv.0 weight norm, self_attn / fc1 /
fc2 names and the pretraining heads final_proj / label_embs_concat) imports to the same outputs."""
from __future__ import annotations

import argparse

import pytest
import torch

import edgekit
from edgekit.convert import detect_format
from edgekit.errors import FormatError
from edgekit.zoo import create_model, get_spec

CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"


def fairseq_cfg(spec):
    return {"_name": "hubert", "extractor_mode": "default", "conv_feature_layers": CONV, "conv_bias": False,
            "encoder_layers": spec.num_layers, "encoder_embed_dim": spec.embed_dim,
            "encoder_ffn_embed_dim": spec.layers[0].ffn_dim, "encoder_attention_heads": spec.layers[0].heads,
            "activation_fn": "gelu", "layer_norm_first": False, "conv_pos": spec.pos_conv.kernel,
            "conv_pos_groups": spec.pos_conv.groups, "final_dim": 16, "label_rate": 50.0, "dropout": 0.1}


def to_fairseq(sd: dict) -> dict:
    """edgekit tiny-hubert keys -> fairseq HubertModel keys (the inverse of the importer's mapping)."""
    out = {}
    for k, v in sd.items():
        n = k
        n = n.replace("feature_extractor.conv_layers.0.layer_norm.", "feature_extractor.conv_layers.0.2.")
        n = n.replace(".conv.weight", ".0.weight") if n.startswith("feature_extractor") else n
        n = n.replace("feature_layer_norm.", "layer_norm.").replace("projection.", "post_extract_proj.")
        n = n.replace("pos_conv.", "encoder.pos_conv.0.").replace("encoder_layer_norm.", "encoder.layer_norm.")
        if n.startswith("layers."):
            n = "encoder." + n
            n = n.replace(".attention.", ".self_attn.").replace(".layer_norm.", ".self_attn_layer_norm.")
            n = n.replace(".feed_forward.intermediate_dense.", ".fc1.").replace(".feed_forward.output_dense.", ".fc2.")
        out[n] = v.clone()
    out["final_proj.weight"] = torch.randn(16, 32)
    out["final_proj.bias"] = torch.randn(16)
    out["label_embs_concat"] = torch.randn(504, 16)
    return out


@pytest.fixture()
def fake(tmp_path):
    model, spec = create_model("tiny-hubert", seed=5), get_spec("tiny-hubert")
    sd = to_fairseq(model.state_dict())
    assert "encoder.pos_conv.0.weight_g" in sd and "feature_extractor.conv_layers.3.0.weight" in sd
    return model, spec, sd, tmp_path


def _same(model, loaded):
    x = torch.randn(2, 16_080, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(hb, ha, atol=1e-6, rtol=0)


def test_cfg_checkpoint_imports(fake):
    model, spec, sd, tmp = fake
    torch.save({"cfg": {"model": fairseq_cfg(spec), "task": {"_name": "hubert_pretraining"}}, "model": sd,
                "optimizer_history": [{"num_updates": 10}]}, tmp / "hubert.pt")
    assert detect_format(tmp / "hubert.pt") == "fairseq"
    loaded, got = edgekit.load(str(tmp / "hubert.pt"))
    assert got.replace(name="") == spec.replace(name="")
    _same(model, loaded)


def test_old_args_namespace_checkpoint(fake):
    model, spec, sd, tmp = fake
    torch.save({"args": argparse.Namespace(**fairseq_cfg(spec)), "model": sd}, tmp / "old.pt")
    loaded, _ = edgekit.load(str(tmp / "old.pt"))
    _same(model, loaded)


def test_layer_norm_extractor_layout(tmp_path):
    spec = get_spec("tiny-hubert").replace(frontend=get_spec("tiny-hubert").frontend.__class__(
        get_spec("tiny-hubert").frontend.layers, norm="layer", conv_bias=True))
    model = edgekit.build_model(spec).eval()
    # layer mode: conv_layers.{i}.2 is Sequential(TransposeLast, LayerNorm, TransposeLast)
    renamed = {}
    for k, v in model.state_dict().items():
        for i in range(7):
            k = k.replace(f"conv_layers.{i}.layer_norm.", f"conv_layers.{i}.2.1.")
        renamed[k.replace(".conv.bias", ".0.bias")] = v
    sd = to_fairseq(renamed)
    cfg = dict(fairseq_cfg(spec), extractor_mode="layer_norm", conv_bias=True)
    torch.save({"cfg": {"model": cfg}, "model": sd}, tmp_path / "large.pt")
    loaded, got = edgekit.load(str(tmp_path / "large.pt"))
    assert got.frontend.norm == "layer" and got.frontend.conv_bias
    _same(model, loaded)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.__setitem__("encoder.layers.0.self_attn.rel_pos_bias", torch.zeros(4)),
     r"1 checkpoint key\(s\) edgekit does not understand: encoder\.layers\.0\.self_attn\.rel_pos_bias"),
    (lambda sd: sd.pop("encoder.layers.1.fc2.bias"), r"1 missing: layers\.1\.feed_forward\.output_dense\.bias"),
    (lambda sd: sd.__setitem__("post_extract_proj.weight", torch.zeros(32, 31)),
     r"shape mismatch.*projection\.weight \(32, 31\) vs \(32, 32\)"),
])
def test_refusals(fake, edit, message):
    _, spec, sd, tmp = fake
    edit(sd)
    torch.save({"cfg": {"model": fairseq_cfg(spec)}, "model": sd}, tmp / "bad.pt")
    with pytest.raises(FormatError, match=message):
        edgekit.load(str(tmp / "bad.pt"))


def test_refuses_unsupported_config(fake):
    _, spec, sd, tmp = fake
    torch.save({"cfg": {"model": dict(fairseq_cfg(spec), activation_fn="relu")}, "model": sd}, tmp / "relu.pt")
    with pytest.raises(FormatError, match="activation_fn='relu' is not supported"):
        edgekit.load(str(tmp / "relu.pt"))
    torch.save({"cfg": {"model": dict(fairseq_cfg(spec), _name="hubert_ctc")}, "model": sd}, tmp / "ctc.pt")
    with pytest.raises(FormatError, match="'hubert_ctc' is not supported"):
        edgekit.load(str(tmp / "ctc.pt"))
    torch.save({"cfg": {"model": dict(fairseq_cfg(spec), conv_feature_layers="__import__('os')")}, "model": sd},
               tmp / "evil.pt")
    with pytest.raises(FormatError, match="conv_feature_layers"):
        edgekit.load(str(tmp / "evil.pt"))
