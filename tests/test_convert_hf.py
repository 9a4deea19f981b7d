"""Parity: transformers HubertModel / Wav2Vec2Model (random weights, save_pretrained) imported
through edgekit.load reproduce every hidden state.

transformers 5 records hidden_states with hooks on the layers and, for these models, does not tie
the last entry to last_hidden_state: in pre-LN (do_stable_layer_norm) models its hidden_states[-1]
is the last layer's output *before* the encoder's final LayerNorm, while edgekit (like
transformers 4.x) reports it after that LayerNorm, i.e. equal to last_hidden_state. The pre-LN test
checks exactly that split instead of hiding it.
"""
from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

import edgekit  # noqa: E402
from edgekit.errors import FormatError  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
ATOL = 1e-4


def _save(model, tmp_path, name="hf"):
    d = tmp_path / name
    model.save_pretrained(str(d))
    return str(d)


def _wave(samples=16_080, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, samples, generator=g)


def _compare(ref, out, n_exact=None):
    n = len(ref.hidden_states) if n_exact is None else n_exact
    assert len(out.hidden_states) == len(ref.hidden_states)
    for i in range(n):
        torch.testing.assert_close(out.hidden_states[i], ref.hidden_states[i], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_small_post_ln_parity(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "hubert":
        ref_model = transformers.HubertModel(transformers.HubertConfig(**SMALL)).eval()
    else:
        ref_model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SMALL)).eval()
    model, spec = edgekit.load(_save(ref_model, tmp_path))
    assert spec.num_layers == 2 and spec.embed_dim == 32 and not spec.layer_norm_first
    assert spec.mask_emb  # masked_spec_embed is mapped, not dropped
    torch.testing.assert_close(model.mask_emb.detach(), ref_model.masked_spec_embed.detach())
    x = _wave()
    with torch.no_grad():
        _compare(ref_model(x, output_hidden_states=True), model(x))


def test_hubert_without_feature_projection_layer_norm(tmp_path):
    torch.manual_seed(0)
    ref_model = transformers.HubertModel(transformers.HubertConfig(**SMALL, feat_proj_layer_norm=False)).eval()
    model, spec = edgekit.load(_save(ref_model, tmp_path))
    assert not spec.feature_layer_norm
    x = _wave()
    with torch.no_grad():
        _compare(ref_model(x, output_hidden_states=True), model(x))


def test_stable_layer_norm_wav2vec2(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(**SMALL, do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    ref_model = transformers.Wav2Vec2Model(cfg).eval()
    model, spec = edgekit.load(_save(ref_model, tmp_path))
    assert spec.layer_norm_first and spec.frontend.norm == "layer" and spec.frontend.conv_bias
    x = _wave()
    with torch.no_grad():
        ref, out = ref_model(x, output_hidden_states=True), model(x)
    _compare(ref, out, n_exact=len(ref.hidden_states) - 1)
    # Last entry: edgekit's is after the final LayerNorm (== last_hidden_state); transformers 5's is before it.
    torch.testing.assert_close(out.hidden_states[-1], ref.last_hidden_state, atol=ATOL, rtol=0)
    normed = ref_model.encoder.layer_norm(ref.hidden_states[-1])
    torch.testing.assert_close(normed, ref.last_hidden_state, atol=ATOL, rtol=0)


def test_for_ctc_drops_lm_head_by_name(tmp_path):
    torch.manual_seed(0)
    ref_model = transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**SMALL, vocab_size=12)).eval()
    model, spec = edgekit.load(_save(ref_model, tmp_path))
    x = _wave()
    with torch.no_grad():
        _compare(ref_model.wav2vec2(x, output_hidden_states=True), model(x))


def test_hubert_for_ctc_and_legacy_weight_norm_keys(tmp_path):
    """HubertForCTC saved as a bare state dict with the old weight_g / weight_v names, next to its config.json."""
    torch.manual_seed(0)
    ref_model = transformers.HubertForCTC(transformers.HubertConfig(**SMALL, vocab_size=12)).eval()
    sd = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                            "weight_v"): v
          for k, v in ref_model.state_dict().items()}
    assert "hubert.encoder.pos_conv_embed.conv.weight_g" in sd
    d = tmp_path / "legacy"
    d.mkdir()
    ref_model.config.to_json_file(str(d / "config.json"))
    torch.save(sd, d / "weights.bin")
    model, _ = edgekit.load(str(d / "weights.bin"))
    x = _wave()
    with torch.no_grad():
        _compare(ref_model.hubert(x, output_hidden_states=True), model(x))


# --------------------------------------------------------------------------- refusals


def _small_dir(tmp_path, **extra):
    torch.manual_seed(0)
    m = transformers.HubertModel(transformers.HubertConfig(**SMALL, **extra)).eval()
    return _save(m, tmp_path), m


def test_refuses_non_gelu_activation(tmp_path):
    d, _ = _small_dir(tmp_path, hidden_act="relu")
    with pytest.raises(FormatError, match="hidden_act='relu'.*gelu"):
        edgekit.load(d)


def test_refuses_extra_key_missing_key_and_shape(tmp_path):
    torch.manual_seed(0)
    ref = transformers.HubertModel(transformers.HubertConfig(**SMALL)).eval()
    d = tmp_path / "bad"
    d.mkdir()
    ref.config.to_json_file(str(d / "config.json"))
    good = dict(ref.state_dict())

    extra = dict(good, **{"encoder.layers.0.attention.rotary.weight": torch.zeros(3)})
    torch.save(extra, d / "pytorch_model.bin")
    with pytest.raises(FormatError, match=r"1 checkpoint key\(s\) edgekit does not understand: "
                                          r"encoder\.layers\.0\.attention\.rotary\.weight"):
        edgekit.load(str(d))

    missing = {k: v for k, v in good.items() if k != "encoder.layers.1.final_layer_norm.bias"}
    torch.save(missing, d / "pytorch_model.bin")
    with pytest.raises(FormatError, match=r"1 missing: layers\.1\.final_layer_norm\.bias"):
        edgekit.load(str(d))

    shaped = dict(good, **{"encoder.layers.0.feed_forward.intermediate_dense.weight": torch.zeros(65, 32)})
    torch.save(shaped, d / "pytorch_model.bin")
    with pytest.raises(FormatError, match=r"shape mismatch.*intermediate_dense\.weight \(65, 32\) vs \(64, 32\)"):
        edgekit.load(str(d))


def test_bare_state_dict_of_unknown_shape_needs_config(tmp_path):
    torch.manual_seed(0)
    ref = transformers.HubertModel(transformers.HubertConfig(**SMALL)).eval()
    p = tmp_path / "alone" / "weights.bin"
    p.parent.mkdir()
    torch.save(ref.state_dict(), p)
    with pytest.raises(FormatError, match="without config.json.*put the model's config.json next to the file"):
        edgekit.load(str(p))


def test_unsupported_model_type(tmp_path):
    d, _ = _small_dir(tmp_path)
    import json
    cfg = json.loads(open(os.path.join(d, "config.json")).read())
    cfg["model_type"] = "wavlm"
    open(os.path.join(d, "config.json"), "w").write(json.dumps(cfg))
    with pytest.raises(FormatError, match="model_type='wavlm' is not supported"):
        edgekit.load(d)
