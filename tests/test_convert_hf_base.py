"""Parity at the full published Base size: transformers HubertModel / Wav2Vec2Model with random
weights, saved with save_pretrained, imported through edgekit.load (a separate file so each test
file stays short on a busy machine)."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import edgekit  # noqa: E402
from test_convert_hf import _compare, _save, _wave  # noqa: E402


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_full_base_config_parity(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "hubert":
        ref_model = transformers.HubertModel(transformers.HubertConfig()).eval()
    else:
        ref_model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).eval()
    model, spec = edgekit.load(_save(ref_model, tmp_path))
    assert spec.param_count() == sum(p.numel() for p in ref_model.parameters()) == 94_371_712
    x = _wave(samples=8_080, batch=1)
    with torch.no_grad():
        _compare(ref_model(x, output_hidden_states=True), model(x))
