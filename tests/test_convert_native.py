"""edgekit's own format: save -> load gives the same outputs; presets load; bad files are refused."""
from __future__ import annotations

import os

import pytest
import torch

import edgekit
from edgekit.convert import detect_format, save
from edgekit.errors import FormatError
from edgekit.zoo import UnknownPresetError, create_model, get_spec


@pytest.mark.parametrize("preset", ["tiny-hubert", "tiny-fithubert", "tiny-pruned", "tiny-distilhubert", "tiny-fbank"])
def test_round_trip_same_outputs(preset, tmp_path):
    model, spec = create_model(preset, seed=3), get_spec(preset)
    path = save(model, spec, tmp_path / "m.pt", source={"from": "test"})
    assert detect_format(path) == "edgekit"
    loaded, spec2 = edgekit.load(path)
    assert spec2 == spec
    x = torch.randn(2, 16_080, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x, with_predictions=True), loaded(x, with_predictions=True)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, atol=0, rtol=0)
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(hb, ha, atol=0, rtol=0)
    if a.predictions is not None:
        for pa, pb in zip(a.predictions, b.predictions):
            torch.testing.assert_close(pb, pa, atol=0, rtol=0)


def test_folded_model_round_trip_and_directory(tmp_path):
    model = create_model("tiny-hubert", seed=1).prepare_for_export()
    path = save(model, get_spec("tiny-hubert"), tmp_path)  # a directory gets edgekit.pt
    assert os.path.basename(path) == "edgekit.pt"
    loaded, spec = edgekit.load(str(tmp_path))
    assert spec.pos_conv.weight_norm is False  # the saved spec describes the folded weight
    x = torch.randn(1, 8_000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).last_hidden_state, model(x).last_hidden_state)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save(create_model("tiny-hubert"), get_spec("tiny-hubert"), tmp_path / "a.pt")
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_preset_names_load_random_weights():
    model, spec = edgekit.load("tiny-hubert")
    assert spec == get_spec("tiny-hubert")
    with pytest.raises(UnknownPresetError, match="did you mean"):
        edgekit.load("tiny-hubertt")


def test_wrong_arch_for_weights_is_refused(tmp_path):
    model = create_model("tiny-hubert")
    torch.save({"format": "edgekit", "version": 1, "arch": get_spec("tiny-distilhubert").to_dict(),
                "state_dict": model.state_dict()}, tmp_path / "x.pt")
    with pytest.raises(FormatError, match="not understand|missing"):
        edgekit.load(str(tmp_path / "x.pt"))


def test_future_version_and_bad_arch(tmp_path):
    sd = create_model("tiny-hubert").state_dict()
    torch.save({"format": "edgekit", "version": 2, "arch": {}, "state_dict": sd}, tmp_path / "v2.pt")
    with pytest.raises(FormatError, match="version 2; this edgekit reads version 1"):
        edgekit.load(str(tmp_path / "v2.pt"))
    torch.save({"format": "edgekit", "version": 1, "arch": {"embed_dim": 3}, "state_dict": sd}, tmp_path / "a.pt")
    with pytest.raises(FormatError, match="invalid arch"):
        edgekit.load(str(tmp_path / "a.pt"))


def test_not_a_checkpoint_and_foreign_dicts(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("hello, not a checkpoint")
    with pytest.raises(FormatError, match="not a PyTorch checkpoint"):
        edgekit.load(str(p))
    torch.save({"optimizer": {"lr": 1.0}, "epoch": 3}, tmp_path / "foreign.pt")
    with pytest.raises(FormatError, match=r"a dict with 'epoch', 'optimizer'; expected a checkpoint of a supported"):
        edgekit.load(str(tmp_path / "foreign.pt"))
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "sd.pt")
    with pytest.raises(FormatError, match="matches no supported layout"):
        edgekit.load(str(tmp_path / "sd.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(FormatError, match="holds a list, not a checkpoint dict"):
        edgekit.load(str(tmp_path / "list.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="neither config.json"):
        edgekit.load(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        edgekit.load(str(tmp_path / "missing.pt"))


class Unknown:  # a class a checkpoint may pickle (e.g. a scheduler); it must never be instantiated
    created = 0

    def __init__(self):
        Unknown.created += 1

    def __reduce__(self):
        return (Unknown, ())


def test_foreign_pickled_objects_are_not_executed(tmp_path):
    model = create_model("tiny-hubert")
    torch.save({"format": "edgekit", "version": 1, "arch": get_spec("tiny-hubert").to_dict(),
                "state_dict": model.state_dict()}, tmp_path / "ok.pt")
    payload = torch.load(tmp_path / "ok.pt", weights_only=True)
    payload["source"] = {"scheduler": Unknown()}
    torch.save(payload, tmp_path / "with_obj.pt")
    before = Unknown.created
    loaded, _ = edgekit.load(str(tmp_path / "with_obj.pt"))
    assert Unknown.created == before  # read with placeholders, the class was never called
    assert isinstance(loaded, torch.nn.Module)
