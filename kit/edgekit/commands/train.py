"""`edgekit data synth`, `edgekit distill`, `edgekit train-supernet`, `edgekit prune`.

Each training command writes to --out: checkpoints/last.pt (resumable with --resume),
train_log.csv, the final model (model.pt in edgekit's format, or supernet.pt in the LightHuBERT
layout) and summary.json. Run with `torchrun --nproc_per_node N -m edgekit.cli ...` for several
processes; --batch-size is the global batch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .common import echo_json, fmt_count, json_option, user_errors


def _train_options(fn):
    opts = [
        click.option("--audio", required=True, type=click.Path(file_okay=False), help="Folder of wav/flac/ogg files."),
        click.option("--file-list", default=None, type=click.Path(dir_okay=False), help="Optional list of files."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder."),
        click.option("--steps", default=1000, show_default=True, type=int),
        click.option("--batch-size", default=8, show_default=True, type=int, help="Global batch per micro-step."),
        click.option("--grad-accum", default=1, show_default=True, type=int),
        click.option("--lr", default=2e-4, show_default=True, type=float),
        click.option("--warmup-steps", default=0, show_default=True, type=int, help="LR warm-up steps."),
        click.option("--schedule", default="linear", show_default=True, type=click.Choice(["linear", "cosine", "constant"])),
        click.option("--clip-norm", default=10.0, show_default=True, type=float),
        click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "off", "bf16", "fp16"])),
        click.option("--crop-seconds", default=2.0, show_default=True, type=float),
        click.option("--val-every", default=0, show_default=True, type=int),
        click.option("--ckpt-every", default=0, show_default=True, type=int),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _run(task, kw: dict, as_json: bool, export) -> None:
    from ..train.data import AudioFolder
    from ..train.trainer import Trainer, TrainConfig, init_distributed

    cfg = TrainConfig(steps=kw["steps"], batch_size=kw["batch_size"], grad_accum=kw["grad_accum"], lr=kw["lr"],
                      warmup_steps=kw["warmup_steps"], schedule=kw["schedule"], clip_norm=kw["clip_norm"],
                      amp=kw["amp"], val_every=kw["val_every"], ckpt_every=kw["ckpt_every"], seed=kw["seed"],
                      progress=not as_json)
    train = AudioFolder(kw["audio"], "train", kw["crop_seconds"], file_list=kw["file_list"])
    valid = AudioFolder(kw["audio"], "valid", kw["crop_seconds"], file_list=kw["file_list"], min_files=0)
    env = init_distributed(kw["device"])
    result = Trainer(cfg, kw["out"], env).run(task, train, valid if len(valid) else None, resume=kw["resume"])
    if not env.is_main:
        return
    summary = {"method": task.method, "steps": result.step, "train_loss": result.train_loss,
               "valid_loss": result.valid_loss, "audio_seconds_per_second": result.audio_seconds_per_second,
               "skipped_files": train.skipped + valid.skipped, "checkpoint": result.checkpoint,
               "log": str(Path(kw["out"]) / "train_log.csv"), **export()}
    tmp = Path(kw["out"]) / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, Path(kw["out"]) / "summary.json")
    if train.skipped + valid.skipped:
        click.echo(f"warning: {train.skipped + valid.skipped} unreadable audio file read(s) skipped", err=True)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{task.method}: {result.step} steps, train loss {result.train_loss:.4f}"
               + (f", valid loss {result.valid_loss:.4f}" if result.valid_loss is not None else "")
               + f", {result.audio_seconds_per_second:.1f} s of audio/s")
    click.echo(f"final model: {summary['model']}")
    if "params" in summary:
        click.echo(f"parameters {fmt_count(summary['params'])}, MACs ({summary.get('mac_seconds', 1.0):g} s) "
                   f"{fmt_count(summary['macs'])}")


@click.group("data")
def data_group() -> None:
    """Audio data helpers."""


@data_group.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write wav files to.")
@click.option("--n", "n", default=100, show_default=True, type=int, help="Number of utterances.")
@click.option("--min-seconds", default=2.0, show_default=True, type=float)
@click.option("--max-seconds", default=5.0, show_default=True, type=float)
@click.option("--method", default="auto", show_default=True, type=click.Choice(["auto", "espeak-ng", "synthetic"]),
              help="espeak-ng when installed (auto), else a synthetic speech-like signal.")
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
@user_errors
def synth_cmd(out, n, min_seconds, max_seconds, method, seed, as_json) -> None:
    """Write a small speech-like corpus (16 kHz mono wav) for trying the training commands."""
    from ..train.synth import synth_corpus

    r = synth_corpus(out, n, (min_seconds, max_seconds), seed=seed, method=method)
    if as_json:
        echo_json({"out": r.out_dir, "files": len(r.files), "seconds": r.seconds, "method": r.method})
        return
    click.echo(f"wrote {len(r.files)} files ({r.seconds:.1f} s, {r.method}) to {r.out_dir}")


@click.command("distill")
@click.option("--teacher", required=True, help="Preset or checkpoint edgekit.load reads.")
@click.option("--student", required=True, help="Preset name or ArchSpec JSON.")
@click.option("--method", required=True, type=click.Choice(["distilhubert", "fithubert"]))
@_train_options
@json_option
@user_errors
def distill_cmd(teacher, student, method, as_json, **kw) -> None:
    """Distil a teacher into a student (DistilHuBERT or FitHuBERT)."""
    from ..train.distill import make_distill_task, resolve_model, resolve_spec, save_final

    t_model, _ = resolve_model(teacher, seed=kw["seed"])
    task = make_distill_task(method, t_model, resolve_spec(student), seed=kw["seed"])

    def export():
        model, spec = task.export()
        return {"model": save_final(model, spec, kw["out"]), "params": spec.param_count(False),
                "macs": spec.mac_count(1.0), "mac_seconds": 1.0}

    _run(task, kw, as_json, export)


@click.command("train-supernet")
@click.option("--teacher", required=True, help="Preset or checkpoint edgekit.load reads.")
@click.option("--space", required=True, help="Search space name (lighthubert-base, lighthubert-small, tiny-supernet) or JSON.")
@click.option("--stage", required=True, type=click.IntRange(1, 2))
@click.option("--init", "init", default=None, type=click.Path(dir_okay=False), help="Stage-1 supernet.pt for stage 2.")
@click.option("--random-subnets", default=2, show_default=True, type=int, help="Sampled subnets per step besides largest and smallest.")
@_train_options
@json_option
@user_errors
def supernet_cmd(teacher, space, stage, init, random_subnets, as_json, **kw) -> None:
    """Train a LightHuBERT supernet (stage 1: full model; stage 2: sandwich-rule subnets)."""
    from ..train.distill import resolve_model
    from ..train.supernet_train import SupernetTask

    t_model, _ = resolve_model(teacher, seed=kw["seed"])
    task = SupernetTask(t_model, space, stage, random_subnets=random_subnets, init=init, seed=kw["seed"])

    def export():
        path = task.save(Path(kw["out"]) / "supernet.pt")
        return {"model": path, "space": task.space.name, "stage": stage,
                "load_with": f"edgekit.load({path!r}, subnet='default'|'max'|'min'|{{...}})"}

    _run(task, kw, as_json, export)


@click.command("prune")
@click.option("--teacher", required=True, help="Preset or checkpoint edgekit.load reads.")
@click.option("--model", "model_src", required=True, help="The model to prune: preset or checkpoint.")
@click.option("--target-sparsity", default=0.75, show_default=True, type=float)
@click.option("--by", default="params", show_default=True, type=click.Choice(["params", "macs"]))
@click.option("--sparsity-warmup", default=None, type=int, help="Steps of linear target ramp (default: steps / 3).")
@click.option("--mac-seconds", default=10.0, show_default=True, type=float, help="Input length MACs are counted for.")
@_train_options
@json_option
@user_errors
def prune_cmd(teacher, model_src, target_sparsity, by, sparsity_warmup, mac_seconds, as_json, **kw) -> None:
    """HJ/DPHuBERT structured pruning with HardConcrete gates, distilling the teacher meanwhile."""
    from ..train.distill import resolve_model, save_final
    from ..train.prune import PruneConfig, PruneTask

    t_model, _ = resolve_model(teacher, seed=kw["seed"])
    model, _ = resolve_model(model_src, seed=kw["seed"])
    warm = sparsity_warmup if sparsity_warmup is not None else max(1, kw["steps"] // 3)
    task = PruneTask(t_model, model, PruneConfig(target_sparsity=target_sparsity, by=by, warmup_steps=warm,
                                                 seconds=mac_seconds), seed=kw["seed"])

    def export():
        small, spec, report = task.export()
        return {"model": save_final(small, spec, kw["out"]), **report}

    _run(task, kw, as_json, export)


def register(group: click.Group) -> None:
    group.add_command(data_group)
    group.add_command(distill_cmd)
    group.add_command(supernet_cmd)
    group.add_command(prune_cmd)
