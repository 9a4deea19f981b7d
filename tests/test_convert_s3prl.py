"""s3prl DistilHuBERT: {'Distiller': state_dict, 'Config': {'distiller': ...}, 'Optimizer', 'Step', 'Args'}.
The fake has the distiller layout: fairseq conv blocks, post_extract_proj, encoder.pos_conv.0,
self_attn / fc1 / fc2, and output_layer = Sequential(Linear, GELU, SplitLinear) whose SplitLinear
keeps weight [N, inter, out] and bias [1, 1, N, out]."""
from __future__ import annotations

import argparse

import pytest
import torch

import edgekit
from edgekit.convert import detect_format
from edgekit.errors import FormatError
from edgekit.zoo import create_model, get_spec
from test_convert_fairseq import CONV, to_fairseq


def distiller_config(spec):
    return {"extractor_mode": "default", "extractor_conv_feature_layers": CONV, "extractor_dropout": 0.0,
            "feature_grad_mult": 0.1, "conv_pos": spec.pos_conv.kernel, "conv_pos_groups": spec.pos_conv.groups,
            "encoder_layers": spec.num_layers, "encoder_embed_dim": spec.embed_dim,
            "encoder_ffn_embed_dim": spec.layers[0].ffn_dim, "encoder_attention_heads": spec.layers[0].heads,
            "activation_fn": "gelu", "layer_norm_first": False, "attention_type": "original",
            "final_dim": spec.heads.target_dim, "out_layer_type": "expand-last", "n_tasks": len(spec.heads.targets),
            "task_emb_type": "expand-last", "loss_type": "l1", "cosine_loss": 1.0,
            "pred_layer_id": list(spec.heads.targets), "init_teacher_conv_layers": True}


def to_distiller(sd: dict) -> dict:
    heads = {k: v for k, v in sd.items() if k.startswith("heads.")}
    body = {k: v for k, v in sd.items() if not k.startswith("heads.")}
    out = {k: v for k, v in to_fairseq(body).items() if not k.startswith(("final_proj", "label_embs"))}
    n = len([k for k in heads if k.endswith(".weight") and k.startswith("heads.targets.")])
    out["output_layer.0.weight"], out["output_layer.0.bias"] = heads["heads.proj.weight"], heads["heads.proj.bias"]
    out["output_layer.2.weight"] = torch.stack([heads[f"heads.targets.{i}.weight"].t() for i in range(n)])
    out["output_layer.2.bias"] = torch.stack([heads[f"heads.targets.{i}.bias"] for i in range(n)])[None, None]
    return out


@pytest.fixture()
def fake(tmp_path):
    model, spec = create_model("tiny-distilhubert", seed=11), get_spec("tiny-distilhubert")
    sd = to_distiller(model.state_dict())
    assert sd["output_layer.2.weight"].shape == (3, 32, 32) and sd["output_layer.2.bias"].shape == (1, 1, 3, 32)
    assert not any(k.startswith("layer_norm.") for k in sd)  # DistilHuBERT has no feature LayerNorm
    return model, spec, sd, tmp_path


def _save(tmp, sd, cfg):
    path = tmp / "distilhubert.ckpt"
    torch.save({"Distiller": sd, "Config": {"distiller": cfg, "runner": {"total_steps": 10}},
                "Optimizer": {"state": {}}, "Step": 10, "Args": argparse.Namespace(seed=0)}, path)
    return str(path)


def test_distilhubert_with_heads(fake):
    model, spec, sd, tmp = fake
    path = _save(tmp, sd, distiller_config(spec))
    assert detect_format(path) == "s3prl-distiller"
    loaded, got = edgekit.load(path)
    assert got.heads == spec.heads and not got.feature_layer_norm
    x = torch.randn(2, 16_080, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x, with_predictions=True), loaded(x, with_predictions=True)
    for pa, pb in zip(a.predictions, b.predictions):
        torch.testing.assert_close(pb, pa, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-6, rtol=0)


def test_split_linear_semantics_match_s3prl(fake):
    """The mapped heads compute what s3prl's SplitLinear computes from the raw tensors."""
    model, spec, sd, tmp = fake
    loaded, _ = edgekit.load(_save(tmp, sd, distiller_config(spec)))
    h = torch.randn(1, 5, 32 * 3)
    w, b = sd["output_layer.2.weight"], sd["output_layer.2.bias"]
    ref = (torch.einsum("...klm,kmn->...kln", h.reshape(1, 5, 3, 1, 32), w).squeeze(3) + b)
    ours = torch.stack([head(c) for head, c in zip(loaded.heads.targets, h.split(32, dim=-1))], dim=2)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_refusals(fake):
    _, spec, sd, tmp = fake
    with pytest.raises(FormatError, match="task_emb_type='add' is not supported"):
        edgekit.load(_save(tmp, sd, dict(distiller_config(spec), task_emb_type="add")))
    bad = dict(sd, **{"output_layer.3.weight": torch.zeros(1)})
    with pytest.raises(FormatError, match=r"not understand: output_layer\.3\.weight"):
        edgekit.load(_save(tmp, bad, distiller_config(spec)))
    short = {k: v for k, v in sd.items() if k != "encoder.layers.0.fc1.weight"}
    with pytest.raises(FormatError, match=r"missing: layers\.0\.feed_forward\.intermediate_dense\.weight"):
        edgekit.load(_save(tmp, short, distiller_config(spec)))
    wrong = dict(sd, **{"output_layer.2.weight": torch.zeros(2, 32, 32)})
    with pytest.raises(FormatError, match="do not hold 3 heads"):
        edgekit.load(_save(tmp, wrong, distiller_config(spec)))
