"""FitHuBERT Lightning checkpoints. The fake follows glory20h/FitHuBERT: 'state_dict' with the student
under 'student_model.' (fairseq layout, the Conv1d time-reduction layer inserted into encoder.layers at
tr_layer_index so later layers shift by one, `upsampler`, layer-wise proj_head.{i}.upsampler/lin_proj
or final_proj), the frozen teacher under 'teacher_model.', the training yaml in hyper_parameters."""
from __future__ import annotations

import pytest
import torch

import edgekit
from edgekit.arch import LayerwiseHeads, TimeReduction
from edgekit.convert import detect_format
from edgekit.convert.fithubert import load_fithubert
from edgekit.errors import FormatError
from edgekit.zoo import get_spec
from test_convert_fairseq import to_fairseq

CONV = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2"


def distiller_yaml(spec, tr_index):
    return {"extractor_mode": "default", "conv_feature_layers": CONV, "conv_bias": False, "n_mels": 0,
            "conv_pos": spec.pos_conv.kernel, "conv_pos_groups": spec.pos_conv.groups, "pos_conv_depth": 1,
            "layer_type": "transformer", "encoder_layers": spec.num_layers, "encoder_embed_dim": spec.embed_dim,
            "encoder_ffn_embed_dim": spec.layers[0].ffn_dim, "encoder_attention_heads": spec.layers[0].heads,
            "activation_fn": "gelu", "layer_norm_first": False, "final_dim": 256, "pred_head_final_dim": 32,
            "pred_head_inter_dim": 0, "layerwise_proj": True, "pred_layer_id": "[11]", "enable_tr_layer": True,
            "tr_conv1d_kernel": 2, "tr_layer_index": tr_index, "tr_reduce_factor": 2, "tr_layer_type": "conv1d",
            "required_seq_len_multiple": 1, "crop_seq_to_multiple": 1}


def to_lightning(sd: dict, n_layers: int, tr_index: int) -> dict:
    def layer_index(k):
        i = int(k.split(".")[1])
        return f"layers.{i if i < tr_index else i + 1}." + k.split(".", 2)[2]

    body, student = {}, {}
    for k, v in sd.items():
        if k.startswith("layers."):
            body[layer_index(k)] = v
        elif k.startswith("time_reduction.conv."):
            student[f"encoder.layers.{tr_index}." + k.rsplit(".", 1)[1]] = v.clone()
        elif k.startswith("upsampler.conv."):
            student["upsampler." + k.rsplit(".", 1)[1]] = v.clone()
        elif k.startswith("heads.heads."):
            _, _, i, rest = k.split(".", 3)
            student[f"proj_head.{i}.{rest}"] = v.clone()
        else:
            body[k] = v
    fs = {k: v for k, v in to_fairseq(body).items() if not k.startswith(("final_proj", "label_embs"))}
    student.update(fs)
    out = {"student_model." + k: v for k, v in student.items()}
    out["teacher_model.model.encoder.layers.0.fc1.weight"] = torch.zeros(4, 4)  # frozen teacher, dropped
    return out


def _spec(tr_index, heads_layers):
    base = get_spec("tiny-fithubert")
    return base.replace(time_reduction=TimeReduction(before_layer=tr_index, factor=2),
                        heads=LayerwiseHeads(layers=heads_layers, target_dim=32))


@pytest.mark.parametrize("tr_index, final_only", [(0, False), (1, False), (0, True)])
def test_imports_with_shifted_layers(tr_index, final_only, tmp_path):
    spec = _spec(tr_index, (3,) if final_only else (1, 2, 3))
    torch.manual_seed(4)
    model = edgekit.build_model(spec).eval()
    sd = to_lightning(model.state_dict(), spec.num_layers, tr_index)
    if final_only:  # after _disable_projection_heads(): the last head is kept as final_proj
        sd = {k.replace("student_model.proj_head.0.", "student_model.final_proj."): v for k, v in sd.items()}
    assert f"student_model.encoder.layers.{tr_index}.weight" in sd
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": {"cfg": {"distiller": distiller_yaml(spec, tr_index),
                                                                          "train": {"num_epochs": 1}}}}, path)
    assert detect_format(path) == "fithubert"
    loaded, got = edgekit.load(str(path))
    assert got.time_reduction == spec.time_reduction and got.heads == spec.heads
    # An even frame count (16_080 samples -> 50 frames): see the report on odd counts.
    x = torch.randn(2, 16_080, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x, with_predictions=True), loaded(x, with_predictions=True)
    for ha, hb in zip(a.hidden_states + a.predictions, b.hidden_states + b.predictions):
        torch.testing.assert_close(hb, ha, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=1e-6, rtol=0)


def _fake(tmp_path):
    spec = _spec(0, (1, 2, 3))
    model = edgekit.build_model(spec).eval()
    return spec, to_lightning(model.state_dict(), 3, 0)


def test_config_passed_explicitly_when_checkpoint_has_none(tmp_path):
    spec, sd = _fake(tmp_path)
    ckpt = {"state_dict": sd, "epoch": 1}
    torch.save(ckpt, tmp_path / "noconf.ckpt")
    with pytest.raises(FormatError, match="carries no model config.*load_fithubert"):
        edgekit.load(str(tmp_path / "noconf.ckpt"))
    _, got = load_fithubert(ckpt, config=distiller_yaml(spec, 0))
    assert got.num_layers == 3


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.__setitem__("student_model.proj_head.0.extra.weight", torch.zeros(1)),
     r"not understand: proj_head\.0\.extra\.weight"),
    (lambda sd: sd.pop("student_model.upsampler.bias"), r"missing: upsampler\.conv\.bias"),
    (lambda sd: sd.__setitem__("student_model.encoder.layers.0.weight", torch.zeros(24, 24, 3)),
     r"time_reduction\.conv\.weight \(24, 24, 3\) vs \(24, 24, 2\)"),
    (lambda sd: sd.__setitem__("optimizer_probe.weight", torch.zeros(1)), r"outside student_model\./teacher_model\."),
])
def test_refusals(edit, message, tmp_path):
    spec, sd = _fake(tmp_path)
    edit(sd)
    torch.save({"state_dict": sd, "hyper_parameters": {"distiller": distiller_yaml(spec, 0)}}, tmp_path / "b.ckpt")
    with pytest.raises(FormatError, match=message):
        edgekit.load(str(tmp_path / "b.ckpt"))


def test_fc1_time_reduction_is_refused(tmp_path):
    spec, sd = _fake(tmp_path)
    cfg = dict(distiller_yaml(spec, 0), tr_layer_type="fc1")
    torch.save({"state_dict": sd, "hyper_parameters": {"distiller": cfg}}, tmp_path / "fc1.ckpt")
    with pytest.raises(FormatError, match="tr_layer_type='fc1' is not supported"):
        edgekit.load(str(tmp_path / "fc1.ckpt"))
