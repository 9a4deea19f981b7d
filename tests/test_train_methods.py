"""Each compression method lowers its loss on a fixed batch; the supernet orders subnets."""
import pytest
import torch

from edgekit import zoo
from edgekit.train.distill import DistilHubertTask, FitHubertTask
from edgekit.train.losses import cosine_loss, distilhubert_loss, fithubert_loss, l1_loss
from edgekit.train.prune import PruneConfig, PruneTask


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines are 2 shared cores
    yield
    torch.set_num_threads(old)


def fixed_batch(seconds=0.5, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000.0
    f0 = 100 + 100 * torch.rand(b, 1, generator=g)
    wave = torch.sin(2 * torch.pi * f0 * t) * 0.5 + 0.05 * torch.randn(b, n, generator=g)
    lengths = torch.tensor([n, n - 1600])
    wave[1, n - 1600:] = 0.0
    return wave, lengths


def fit(task, steps=25, lr=2e-3):
    wave, lengths = fixed_batch()
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=lr)
    losses = []
    for step in range(steps):
        loss, _ = task(wave, lengths, step)
        opt.zero_grad()
        loss.backward()
        task.before_optimizer_step()
        opt.step()
        losses.append(float(loss))
    return losses


def test_losses_match_their_formulas():
    p, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    ref_l1 = torch.cat([(p - t).abs().mean(-1)[0, :3], (p - t).abs().mean(-1)[1]]).mean()
    assert torch.allclose(l1_loss(p, t, mask), ref_l1)
    cos = torch.nn.functional.cosine_similarity(p, t, dim=-1)
    ref_cos = -torch.nn.functional.logsigmoid(torch.cat([cos[0, :3], cos[1]])).mean()
    assert torch.allclose(cosine_loss(p, t, mask), ref_cos)
    total, _ = distilhubert_loss([p, p], [t, t], mask)
    assert torch.allclose(total, 2 * (ref_l1 + ref_cos))
    total, _ = fithubert_loss([p, p], [t, t], (0.1, 1.0), mask)
    assert total > 0


def test_distilhubert_loss_decreases_and_student_starts_from_teacher():
    teacher = zoo.create_model("tiny-hubert")
    task = DistilHubertTask(teacher, zoo.get_spec("tiny-distilhubert"))
    assert task.copied > 0
    # Layer 0 of the student is teacher layer 0 (shapes match, DistilHuBERT init).
    assert torch.equal(task.student.layers[0].attention.q_proj.weight, teacher.layers[0].attention.q_proj.weight)
    losses = fit(task)
    assert losses[-1] < 0.7 * losses[0]
    model, spec = task.export()
    assert spec.heads is None and model.heads is None


def test_fithubert_loss_decreases_with_hint_weights():
    teacher = zoo.create_model("tiny-hubert")
    task = FitHubertTask(teacher, zoo.get_spec("tiny-fithubert"))
    assert task.weights == (0.1, 0.1, 1.0)
    assert task.targets == (1, 1, 2)  # 3 student layers onto 2 teacher layers
    losses = fit(task)
    assert losses[-1] < 0.7 * losses[0]


def test_prune_loss_decreases():
    teacher = zoo.create_model("tiny-hubert")
    task = PruneTask(teacher, zoo.create_model("tiny-hubert", seed=1), PruneConfig(target_sparsity=0.3, warmup_steps=10))
    losses = fit(task)
    assert losses[-1] < losses[0]


def test_supernet_loss_decreases_and_orders_subnets(tmp_path):
    import edgekit
    from edgekit.train.data import AudioFolder
    from edgekit.train.supernet_train import SupernetTask
    from edgekit.train.synth import synth_corpus
    from edgekit.train.trainer import Trainer, TrainConfig

    synth_corpus(tmp_path / "audio", 8, seconds=(1.0, 1.5), method="synthetic")
    data = AudioFolder(tmp_path / "audio", "all", crop_seconds=0.5)
    teacher = zoo.create_model("tiny-hubert")
    task = SupernetTask(teacher, "tiny-supernet", stage=2, random_subnets=1)
    assert task.subnets_for_step(3) == task.subnets_for_step(3)  # seeded by step
    res = Trainer(TrainConfig(steps=30, batch_size=2, lr=2e-3, progress=False), tmp_path / "run").run(task, data)
    assert res.history[-1]["loss_largest"] < 0.7 * res.history[0]["loss_largest"]
    path = task.save(tmp_path / "supernet.pt")
    task.eval()
    big = small = 0.0
    with torch.no_grad():
        for seed in range(3):  # crops the run did not draw (its seed is 0)
            b = data.step_batch(100 + seed, 0, 0, 2)
            big += float(task.subnet_loss(b.wave, b.lengths, "max"))
            small += float(task.subnet_loss(b.wave, b.lengths, "min"))
    assert big < small
    # The checkpoint loads as a LightHuBERT supernet and its subnets match the trained weights.
    model, spec = edgekit.load(str(path), subnet="min")
    task.net.set_subnet("min")
    with torch.no_grad():
        ref = task.net(b.wave, b.lengths).last_hidden_state
        out = model(b.wave, b.lengths).last_hidden_state
    assert torch.allclose(ref, out, atol=1e-5)
    assert spec.embed_dim == task.space.smallest().embed_dim
