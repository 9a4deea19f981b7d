"""Trainer: resume equals an uninterrupted run; 2 processes (torchrun, gloo) equal 1 with the
combined batch; checkpoints and the CSV log are written."""
import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from edgekit import zoo
from edgekit.errors import UserError
from edgekit.train.data import AudioFolder
from edgekit.train.distill import DistilHubertTask
from edgekit.train.synth import synth_corpus
from edgekit.train.trainer import Trainer, TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio")
    synth_corpus(path, 6, seconds=(0.5, 0.8), method="synthetic")
    return path


def make_task():
    return DistilHubertTask(zoo.create_model("tiny-hubert"), zoo.get_spec("tiny-distilhubert"))


def config(**kw):
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, progress=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_equals_uninterrupted(audio, tmp_path):
    data = AudioFolder(audio, "all", crop_seconds=0.25)
    a = make_task()
    Trainer(config(grad_accum=2), tmp_path / "a").run(a, data)
    b = make_task()
    first = Trainer(config(grad_accum=2), tmp_path / "b").run(b, data, stop_at=2)
    assert first.step == 2 and (tmp_path / "b" / "checkpoints" / "last.pt").exists()
    c = make_task()  # a fresh process would start from scratch; --resume restores everything
    second = Trainer(config(grad_accum=2), tmp_path / "b").run(c, data, resume=True)
    assert second.step == 4
    for (name, pa), (_, pc) in zip(a.state_dict().items(), c.state_dict().items()):
        assert torch.equal(pa, pc), name
    rows = list(csv.DictReader(open(tmp_path / "b" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_resume_refuses_another_runs_checkpoint(audio, tmp_path):
    from edgekit.train.prune import PruneConfig, PruneTask

    data = AudioFolder(audio, "all", crop_seconds=0.25)
    Trainer(config(steps=1), tmp_path).run(make_task(), data)
    other = PruneTask(zoo.create_model("tiny-hubert"), zoo.create_model("tiny-hubert"), PruneConfig())
    with pytest.raises(UserError, match="different run"):
        Trainer(config(steps=2), tmp_path).run(other, data, resume=True)


_SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from edgekit import zoo
    from edgekit.train.data import AudioFolder
    from edgekit.train.distill import DistilHubertTask
    from edgekit.train.trainer import Trainer, TrainConfig, init_distributed
    audio, out, result = sys.argv[1:4]
    env = init_distributed("cpu")
    task = DistilHubertTask(zoo.create_model("tiny-hubert"), zoo.get_spec("tiny-distilhubert"))
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, progress=False)
    Trainer(cfg, out, env).run(task, AudioFolder(audio, "all", crop_seconds=0.25))
    if env.is_main:
        torch.save(task.state_dict(), result)
''')


def test_two_process_torchrun_equals_one_process(audio, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(audio), str(tmp_path / "ddp"), str(tmp_path / "ddp.pt")],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = torch.load(tmp_path / "ddp.pt")
    single = make_task()
    Trainer(TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, progress=False),
            tmp_path / "one").run(single, AudioFolder(audio, "all", crop_seconds=0.25))
    ref = single.state_dict()
    initial = make_task().state_dict()
    moved = 0
    for name, value in ref.items():
        assert torch.allclose(ddp[name], value, atol=1e-5, rtol=1e-4), name
        moved += int(not torch.equal(value, initial[name]))
    assert moved > 10  # the comparison is between trained weights, not two copies of the init
