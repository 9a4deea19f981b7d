"""torchaudio / DPHuBERT: {'state_dict', 'config'} with per-layer lists. The fake is a pruned model in
DPHuBERT's layout: torchaudio key names, uneven heads and FFN widths, one layer without attention
and one without FFN, feature_extractor.dummy_weight and 'distill_linear_projs' beside the weights."""
from __future__ import annotations

import pytest
import torch

import edgekit
from edgekit.convert import detect_format
from edgekit.errors import FormatError
from edgekit.zoo import create_model, get_spec


def dphubert_config(spec):
    return {
        "extractor_mode": "group_norm",
        "extractor_conv_layer_config": [[c.channels, c.kernel, c.stride] for c in spec.frontend.layers],
        "extractor_conv_bias": False, "encoder_embed_dim": spec.embed_dim, "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": spec.pos_conv.kernel, "encoder_pos_conv_groups": spec.pos_conv.groups,
        "encoder_num_layers": spec.num_layers,
        "encoder_use_attention": [layer.heads > 0 for layer in spec.layers],
        "encoder_use_feed_forward": [layer.ffn_dim > 0 for layer in spec.layers],
        "encoder_num_heads": [layer.heads for layer in spec.layers], "encoder_head_dim": 16,
        "encoder_attention_dropout": 0.1, "encoder_ff_interm_features": [layer.ffn_dim for layer in spec.layers],
        "encoder_ff_interm_dropout": 0.0, "encoder_dropout": 0.1, "encoder_layer_norm_first": False,
        "encoder_layer_drop": 0.05, "aux_num_out": None, "normalize_waveform": False,
        "extractor_prune_conv_channels": False, "encoder_prune_attention_heads": False,
        "encoder_prune_attention_layer": False, "encoder_prune_feed_forward_intermediate": False,
        "encoder_prune_feed_forward_layer": False,
    }


def to_torchaudio(sd: dict, last_channels: int) -> dict:
    out = {}
    for k, v in sd.items():
        n = k.replace("feature_layer_norm.", "encoder.feature_projection.layer_norm.")
        n = n.replace("projection.", "encoder.feature_projection.projection.") if n.startswith("projection.") else n
        n = n.replace("pos_conv.", "encoder.transformer.pos_conv_embed.conv.")
        n = n.replace("encoder_layer_norm.", "encoder.transformer.layer_norm.")
        n = "encoder.transformer." + n if n.startswith("layers.") else n
        out[n] = v.clone()
    out["feature_extractor.dummy_weight"] = torch.ones(last_channels)
    return out


@pytest.fixture()
def fake(tmp_path):
    model, spec = create_model("tiny-pruned", seed=7), get_spec("tiny-pruned")
    sd = to_torchaudio(model.state_dict(), spec.frontend.out_dim)
    assert "encoder.transformer.layers.1.feed_forward.intermediate_dense.weight" in sd
    assert not any(k.startswith("encoder.transformer.layers.1.attention.") for k in sd)
    return model, spec, sd, tmp_path


def test_pruned_dphubert_imports(fake):
    model, spec, sd, tmp = fake
    torch.save({"state_dict": sd, "config": dphubert_config(spec),
                "distill_linear_projs": {"0.weight": torch.zeros(4, 4)}}, tmp / "pruned_hubert_base.pth")
    assert detect_format(tmp / "pruned_hubert_base.pth") == "torchaudio"
    loaded, got = edgekit.load(str(tmp / "pruned_hubert_base.pth"))
    assert got.layers == spec.layers and got.frontend == spec.frontend
    x = torch.randn(2, 16_080, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(model(x).hidden_states, loaded(x).hidden_states):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_plain_torchaudio_config_with_scalars_and_ctc_head(tmp_path):
    model, spec = create_model("tiny-hubert", seed=2), get_spec("tiny-hubert")
    sd = {k: v for k, v in to_torchaudio(model.state_dict(), 32).items()
          if k not in ("feature_extractor.dummy_weight", "mask_emb")}
    sd["aux.weight"], sd["aux.bias"] = torch.zeros(29, 32), torch.zeros(29)
    cfg = {k: v for k, v in dphubert_config(spec).items() if not k.startswith(("encoder_use", "encoder_head_dim",
                                                                                 "normalize", "extractor_prune",
                                                                                 "encoder_prune"))}
    cfg.update(encoder_num_heads=2, encoder_ff_interm_features=64, aux_num_out=29)
    torch.save({"state_dict": sd, "config": cfg}, tmp_path / "ta.pt")
    loaded, got = edgekit.load(str(tmp_path / "ta.pt"))
    assert got.layers == spec.layers
    x = torch.randn(1, 16_080)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).last_hidden_state, model(x).last_hidden_state, atol=1e-6, rtol=0)


def test_non_identity_dummy_weight_becomes_the_channel_scale(fake):
    # DPHuBERT folds the last conv layer's soft mask values into dummy_weight; they must survive.
    model, spec, sd, tmp = fake
    scale = torch.linspace(0.2, 1.0, spec.frontend.out_dim)
    sd["feature_extractor.dummy_weight"] = scale
    torch.save({"state_dict": sd, "config": dphubert_config(spec)}, tmp / "p.pth")
    loaded, got = edgekit.load(str(tmp / "p.pth"))
    assert got.frontend.channel_scale
    assert got.param_count() == spec.param_count() + spec.frontend.out_dim
    x = torch.randn(1, 16_080, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_feats = model.feature_extractor(x) * scale
        torch.testing.assert_close(loaded.feature_extractor(x), expected_feats, atol=1e-6, rtol=0)


def test_pruning_in_progress_is_refused(fake):
    _, spec, sd, tmp = fake
    sd["encoder.transformer.layers.0.attention.hard_concrete_for_heads.log_alpha"] = torch.zeros(1)
    torch.save({"state_dict": sd, "config": dphubert_config(spec)}, tmp / "p.pth")
    with pytest.raises(FormatError, match="pruning is still in progress"):
        edgekit.load(str(tmp / "p.pth"))


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.__setitem__("encoder.transformer.layers.1.attention.q_proj.weight", torch.zeros(16, 32)),
     r"1 not in the model its config describes: layers\.1\.attention\.q_proj\.weight"),
    (lambda sd: sd.pop("encoder.transformer.layers.2.final_layer_norm.weight"),
     r"1 missing: layers\.2\.final_layer_norm\.weight"),
    (lambda sd: sd.__setitem__("encoder.transformer.layers.0.feed_forward.intermediate_dense.weight",
                               torch.zeros(41, 32)), r"shape mismatch.*\(41, 32\) vs \(40, 32\)"),
])
def test_refusals(fake, edit, message):
    _, spec, sd, tmp = fake
    edit(sd)
    torch.save({"state_dict": sd, "config": dphubert_config(spec)}, tmp / "bad.pth")
    with pytest.raises(FormatError, match=message):
        edgekit.load(str(tmp / "bad.pth"))


def test_lightning_training_checkpoint_is_named(tmp_path):
    torch.save({"state_dict": {"student_model.encoder.transformer.layer_norm.weight": torch.ones(2)},
                "epoch": 1}, tmp_path / "last.ckpt")
    with pytest.raises(FormatError, match="DPHuBERT/torchaudio Lightning training checkpoint"):
        edgekit.load(str(tmp_path / "last.ckpt"))
