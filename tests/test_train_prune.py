"""Pruning reaches its target expected sparsity; the static rebuild equals the hard-gated model."""
import pytest
import torch

from edgekit import zoo
from edgekit.arch import ArchSpec
from edgekit.train.data import AudioFolder
from edgekit.train.prune import PruneConfig, PruneTask, expected_size, gated_forward, rebuild
from edgekit.train.synth import synth_corpus
from edgekit.train.trainer import Trainer, TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("by", ["params", "macs"])
def test_prune_reaches_target_and_rebuild_matches(tmp_path, by):
    synth_corpus(tmp_path / "audio", 6, seconds=(0.5, 1.0), method="synthetic")
    data = AudioFolder(tmp_path / "audio", "all", crop_seconds=0.25)
    teacher = zoo.create_model("tiny-hubert")
    task = PruneTask(teacher, zoo.create_model("tiny-hubert"), PruneConfig(target_sparsity=0.5, by=by, warmup_steps=40))
    Trainer(TrainConfig(steps=120, batch_size=1, lr=1e-3, progress=False), tmp_path / "run").run(task, data)
    assert abs(float(task.expected_sparsity()) - 0.5) < 0.02

    small, spec, report = task.export()
    # Reported sizes are the analytic counts of the rebuilt ArchSpec.
    assert report["macs"] == spec.mac_count(report["mac_seconds"])
    assert report["params"] == spec.param_count(False)
    assert report["hard_size_from_gates"] == (report["params"] if by == "params" else report["macs"])
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert spec.param_count(False) < zoo.get_spec("tiny-hubert").param_count(False)

    b = data.step_batch(7, 0, 0, 2)
    b.wave[1, 2000:] = 0.0
    lengths = torch.tensor([b.wave.shape[1], 2000])
    task.eval()
    with torch.no_grad():
        gated, _ = gated_forward(task.model, task.gates.values("hard"), b.wave, lengths)
        static = small(b.wave, lengths).last_hidden_state
    assert torch.allclose(gated, static, atol=1e-5)


def test_rebuild_removes_closed_blocks_and_size_formula_matches_arch_counts():
    model = zoo.create_model("tiny-hubert")
    task = PruneTask(zoo.create_model("tiny-hubert"), model, PruneConfig(target_sparsity=0.5))
    hard = task.gates.values("hard")
    hard["conv"][1][5:] = 0.0
    hard["heads"][0][1] = 0.0
    hard["attention"][1][0] = 0.0  # whole attention block of layer 2 closed
    hard["ffn_units"][0][:10] = 0.0
    hard["ffn_units"][1][:] = 0.0  # every unit closed: the FFN block disappears
    small, spec = rebuild(task.model, hard)
    assert spec.frontend.layers[1].channels == 5
    assert [l.heads for l in spec.layers] == [1, 0]
    assert [l.ffn_dim for l in spec.layers] == [int(hard["ffn_units"][0].sum()), 0]
    assert spec.layers[0].ffn_dim <= 54
    h64 = {k: [None if v is None else v.double() for v in vs] for k, vs in hard.items()}
    assert float(expected_size(task.spec, h64, "params", 1.0)) == spec.param_count(False)
    assert float(expected_size(task.spec, h64, "macs", 3.0)) == spec.mac_count(3.0)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        gated, _ = gated_forward(task.model, hard, wave)
        assert torch.allclose(gated, small(wave).last_hidden_state, atol=1e-5)
