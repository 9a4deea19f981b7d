"""`edgekit data synth`, `distill`, `train-supernet` and `prune` end to end through the CLI.

Tiny presets, a few steps on a six-file synthetic corpus: every command exits 0, writes what it
promises (checkpoints/last.pt, train_log.csv, summary.json, model.pt or supernet.pt), its final
model loads with edgekit.load and `edgekit inspect` accepts it; `--resume` continues from the
checkpoint; bad input is one line on exit != 0, never a traceback.
"""
import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import edgekit
from edgekit.cli import main

# 2 steps of batch 2 on 0.5 s crops: seconds of CPU for every tiny model.
FAST = ["--steps", "2", "--batch-size", "2", "--crop-seconds", "0.5"]


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machines are 2 shared cores
    yield
    torch.set_num_threads(old)


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(args) -> dict:
    """Run a training command with --json; exit 0; its stdout is the summary it also wrote."""
    r = invoke([*args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def assert_one_line_error(r, *fragments):
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    for frag in fragments:
        assert frag in errors[0], errors[0]
    return errors[0]


def assert_one_line_user_error(r, *fragments):
    """A UserError at the command boundary: exit 1 and nothing but the one line."""
    line = assert_one_line_error(r, *fragments)
    assert r.exit_code == 1
    assert r.output.strip() == line
    return line


def assert_run_outputs(out: Path, summary: dict, final: str, method: str, steps: int) -> None:
    assert (out / "checkpoints" / "last.pt").is_file()
    assert (out / final).is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["method"] == method and summary["steps"] == steps
    assert Path(summary["model"]) == out / final and Path(summary["checkpoint"]) == out / "checkpoints" / "last.pt"
    assert summary["skipped_files"] == 0
    assert summary["train_loss"] > 0 and summary["valid_loss"] is not None
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["step"]) == steps
    assert float(rows[-1]["loss"]) == pytest.approx(summary["train_loss"], rel=1e-5)
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == steps and ckpt["task"]["method"] == method


def assert_inspect(path: Path, spec, *extra) -> None:
    r = invoke(["inspect", str(path), "--json", *extra])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["arch"] == spec.to_dict()  # inspect reads the same architecture edgekit.load built
    assert data["params_without_heads"] == spec.param_count(False)
    assert data["macs"] == spec.mac_count(1.0)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "audio"
    r = invoke(["data", "synth", "--out", out, "--n", "6", "--min-seconds", "0.6", "--max-seconds", "1.0",
                "--method", "synthetic", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["files"] == 6 and info["method"] == "synthetic" and 3.6 <= info["seconds"] <= 6.0
    assert sorted(p.name for p in out.iterdir()) == [f"utt_{i:05d}.wav" for i in range(6)]
    return out


# --------------------------------------------------------------------------- happy paths


def test_synth_human_output(tmp_path):
    r = invoke(["data", "synth", "--out", tmp_path / "a", "--n", "2", "--min-seconds", "0.2", "--max-seconds", "0.3",
                "--method", "synthetic"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("wrote 2 files (") and "synthetic" in r.output
    assert len(list((tmp_path / "a").glob("*.wav"))) == 2


def test_distill_distilhubert(tmp_path, audio):
    out = tmp_path / "run"
    r = invoke(["distill", "--teacher", "tiny-hubert", "--student", "tiny-distilhubert", "--method", "distilhubert",
                "--audio", audio, "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("distilhubert: 2 steps, train loss ")
    assert f"final model: {out / 'model.pt'}" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert_run_outputs(out, summary, "model.pt", "distilhubert", 2)
    model, spec = edgekit.load(str(out / "model.pt"))
    assert spec.heads is None  # training heads are dropped from the final model
    assert spec.num_layers == 2 and summary["params"] == spec.param_count(False)
    assert summary["macs"] == spec.mac_count(1.0)
    with torch.no_grad():
        y = model(torch.randn(1, 8000)).last_hidden_state
    assert y.shape[-1] == spec.embed_dim and torch.isfinite(y).all()
    assert_inspect(out / "model.pt", spec)


def test_distill_fithubert(tmp_path, audio):
    out = tmp_path / "run"
    summary = ok(["distill", "--teacher", "tiny-hubert", "--student", "tiny-fithubert", "--method", "fithubert",
                  "--audio", audio, "--out", out, *FAST])
    assert_run_outputs(out, summary, "model.pt", "fithubert", 2)
    _, spec = edgekit.load(str(out / "model.pt"))
    assert spec.heads is None and spec.num_layers == 3 and spec.embed_dim == 24
    assert summary["params"] == spec.param_count(False)
    assert_inspect(out / "model.pt", spec)


def test_train_supernet_stage1_then_stage2(tmp_path, audio):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    base = ["train-supernet", "--teacher", "tiny-hubert", "--space", "tiny-supernet", "--audio", audio, *FAST]
    first = ok([*base, "--stage", "1", "--out", s1])
    assert_run_outputs(s1, first, "supernet.pt", "lighthubert", 2)
    assert first["stage"] == 1 and first["space"] == "tiny-supernet"
    second = ok([*base, "--stage", "2", "--init", s1 / "supernet.pt", "--out", s2])
    assert_run_outputs(s2, second, "supernet.pt", "lighthubert", 2)
    assert second["stage"] == 2
    sizes = {}
    for sub in ("min", "max"):
        model, spec = edgekit.load(str(s2 / "supernet.pt"), subnet=sub)
        sizes[sub] = spec.param_count(False)
        with torch.no_grad():
            y = model(torch.randn(1, 8000)).last_hidden_state
        assert y.shape[-1] == spec.embed_dim and torch.isfinite(y).all()
        assert_inspect(s2 / "supernet.pt", spec, "--subnet", sub)
    assert sizes["min"] < sizes["max"]
    # Stage 2 started from stage 1's weights, and then trained them.
    a = torch.load(s1 / "supernet.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(s2 / "supernet.pt", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_prune(tmp_path, audio):
    out = tmp_path / "run"
    summary = ok(["prune", "--teacher", "tiny-hubert", "--model", "tiny-hubert", "--target-sparsity", "0.5",
                  "--audio", audio, "--out", out, *FAST])
    assert_run_outputs(out, summary, "model.pt", "prune", 2)
    assert summary["by"] == "params" and summary["target_sparsity"] == 0.5
    _, spec = edgekit.load(str(out / "model.pt"))
    # The reported sizes are the analytic counts of the rebuilt static ArchSpec.
    assert summary["params"] == spec.param_count(False) <= summary["params_before"]
    assert summary["macs"] == spec.mac_count(summary["mac_seconds"])
    assert summary["hard_size_from_gates"] == summary["params"]
    assert_inspect(out / "model.pt", spec)


def test_resume_continues_from_the_checkpoint(tmp_path, audio):
    """2 steps, then --resume to 4, equals 4 uninterrupted steps (constant schedule: the
    LR does not depend on --steps), and the CSV log is continued, not restarted."""
    common = ["distill", "--teacher", "tiny-hubert", "--student", "tiny-distilhubert", "--method", "distilhubert",
              "--audio", audio, "--batch-size", "2", "--crop-seconds", "0.5", "--schedule", "constant", "--lr", "1e-3"]
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert ok([*common, "--steps", "2", "--out", part])["steps"] == 2
    resumed = ok([*common, "--steps", "4", "--resume", "--out", part])
    assert resumed["steps"] == 4
    straight = ok([*common, "--steps", "4", "--out", whole])
    assert_run_outputs(part, resumed, "model.pt", "distilhubert", 4)
    with open(part / "train_log.csv", newline="") as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == [2, 4]
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)
    a = edgekit.load(str(part / "model.pt"))[0].state_dict()
    b = edgekit.load(str(whole / "model.pt"))[0].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    # A checkpoint of another run is refused, not silently mixed in.
    swap = {"tiny-distilhubert": "tiny-fithubert", "distilhubert": "fithubert"}
    other = [swap.get(x, x) for x in common]
    r = invoke([*other, "--steps", "4", "--resume", "--out", part])
    assert_one_line_user_error(r, "different run", "new --out")


def test_resume_of_a_finished_run_keeps_its_losses(tmp_path, audio):
    """Resuming at the last step trains nothing and still reports the run's real losses
    (summary.json stays strict JSON: no NaN)."""
    out = tmp_path / "run"
    args = ["prune", "--teacher", "tiny-hubert", "--model", "tiny-hubert", "--target-sparsity", "0.5",
            "--audio", audio, "--out", out, "--steps", "1", "--batch-size", "2", "--crop-seconds", "0.5"]
    first = ok(args)
    again = ok([*args, "--resume"])
    assert again["steps"] == 1
    assert again["train_loss"] == first["train_loss"] and again["valid_loss"] == first["valid_loss"]
    json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)
    assert again["params"] == first["params"]


# --------------------------------------------------------------------------- bad input


def distill_args(audio, out, **over):
    opts = {"--teacher": "tiny-hubert", "--student": "tiny-distilhubert", "--method": "distilhubert",
            "--audio": audio, "--out": out, **over}
    return ["distill", *[x for kv in opts.items() for x in kv], *FAST]


def test_missing_audio_directory(tmp_path):
    r = invoke(distill_args(tmp_path / "nope", tmp_path / "out"))
    assert_one_line_user_error(r, "does not exist", "edgekit data synth")
    assert not (tmp_path / "out").exists()


def test_empty_audio_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    r = invoke(["train-supernet", "--teacher", "tiny-hubert", "--space", "tiny-supernet", "--stage", "1",
                "--audio", tmp_path / "empty", "--out", tmp_path / "out", *FAST])
    assert_one_line_user_error(r, "0 audio file(s)", ".wav")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_unknown_student_preset(tmp_path, audio):
    r = invoke(distill_args(audio, tmp_path / "out", **{"--student": "tiny-distilhubret"}))
    assert_one_line_user_error(r, "'tiny-distilhubret'", "edgekit models")


def test_unknown_distill_method(tmp_path, audio):
    r = invoke(distill_args(audio, tmp_path / "out", **{"--method": "bogus"}))
    # click's usage error: exit 2, a usage hint and one Error line naming the choices.
    assert r.exit_code == 2
    assert_one_line_error(r, "'bogus'", "distilhubert", "fithubert")


@pytest.mark.parametrize("sparsity", ["0", "1", "1.5", "-0.2"])
def test_prune_target_sparsity_outside_0_1(tmp_path, audio, sparsity):
    r = invoke(["prune", "--teacher", "tiny-hubert", "--model", "tiny-hubert", "--target-sparsity", sparsity,
                "--audio", audio, "--out", tmp_path / "out", *FAST])
    assert_one_line_user_error(r, "--target-sparsity", "between 0 and 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["distill", "train-supernet", "prune"])
def test_resume_without_a_checkpoint(tmp_path, audio, command):
    out = tmp_path / "out"
    args = {"distill": distill_args(audio, out),
            "train-supernet": ["train-supernet", "--teacher", "tiny-hubert", "--space", "tiny-supernet", "--stage",
                               "1", "--audio", audio, "--out", out, *FAST],
            "prune": ["prune", "--teacher", "tiny-hubert", "--model", "tiny-hubert", "--audio", audio,
                      "--out", out, *FAST]}[command]
    r = invoke([*args, "--resume"])
    assert_one_line_user_error(r, "no checkpoint", "last.pt", "without --resume")
    assert not (out / "summary.json").exists()
