"""`edgekit search`: hardware-aware architecture search under a latency budget on a device."""
from __future__ import annotations

import math
import os
from pathlib import Path

import click
from rich.table import Table

from ..errors import UserError
from .common import console, echo_json, fmt_count, json_option, user_errors

_BACKENDS = click.Choice(["auto", "executorch", "onnx", "tflite"])
_DTYPES = click.Choice(["auto", "fp32", "int8"])
_FORMATS = click.Choice(["executorch", "onnx", "tflite"])
_FRONT_ROWS = 15


def distill_command(best_arch: str, time_reduction: bool) -> str:
    """The `edgekit distill` command that trains the chosen student (issue 6's CLI)."""
    method = "fithubert" if time_reduction else "distilhubert"
    return (f"edgekit distill --teacher hubert-base --student {best_arch} --method {method} "
            "--audio YOUR_AUDIO_DIR --steps 200000 --out student-run")


def _front_rows(front: list, best) -> list:
    """At most _FRONT_ROWS points spread over the front, always including the chosen one."""
    if len(front) <= _FRONT_ROWS:
        return front
    step = (len(front) - 1) / (_FRONT_ROWS - 1)
    picked = {front[round(i * step)].index: front[round(i * step)] for i in range(_FRONT_ROWS)}
    if best is not None:
        picked[best.index] = best
    return sorted(picked.values(), key=lambda c: c.predicted_ms)


@click.command("search")
@click.option("--device", "device_name", required=True, help="Target device (edgekit devices).")
@click.option("--max-ms", type=float, required=True, help="Latency budget in milliseconds for --seconds of audio.")
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Input length the budget is for.")
@click.option("--backend", type=_BACKENDS, default="auto", show_default=True,
              help="auto: search every backend the device has a table for.")
@click.option("--dtype", type=_DTYPES, default="auto", show_default=True,
              help="auto: search fp32 and int8 where tables exist.")
@click.option("--space", "space_name", default=None,
              help="lighthubert-base, lighthubert-small, student, tiny-student, tiny-supernet or a .json/.yaml "
                   "file (docs/search-spaces.md). Default: student, or the --supernet's space.")
@click.option("--supernet", type=click.Path(dir_okay=False), default=None,
              help="LightHuBERT-style supernet checkpoint: rank subnets by measured distillation loss.")
@click.option("--teacher", default=None, help="Teacher for the loss (default: the supernet's largest subnet).")
@click.option("--audio", type=click.Path(file_okay=False), default=None, help="Audio folder the loss is measured on.")
@click.option("--candidates", multiple=True, help="Trained models (checkpoints or presets) ranked in the same front; "
                                                   "repeat the option.")
@click.option("--max-params", type=float, default=None, help="Parameter limit in millions.")
@click.option("--max-mb", type=float, default=None, help="Model size limit in MB (4 bytes/param fp32, 1 int8).")
@click.option("--table", "tables", multiple=True, type=click.Path(dir_okay=False),
              help="Latency table file(s) to use instead of the best known ones; repeat the option.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--budget-evals", type=int, default=2000, show_default=True, help="Candidate evaluations.")
@click.option("--algorithm", type=click.Choice(["evolution+nsga2", "evolution", "nsga2", "random"]),
              default="evolution+nsga2", show_default=True)
@click.option("--audio-clips", type=int, default=16, show_default=True,
              help="Clips of --audio the loss is measured on (first --seconds of each).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write search.json, best_arch.json, pareto.png (and weights in supernet mode) here.")
@click.option("--export", "export_fmt", type=_FORMATS, default=None,
              help="Export the winner with the searched dtype (the search is restricted to this backend).")
@click.option("--rounds", type=click.IntRange(1, 10), default=None,
              help="With --export on host: time the winner; when it misses its prediction by more than 10%, "
                   "rescale that deployment's predictions by measured/predicted and search again, up to this "
                   "many searches (default: one more than the deployments searched, at most 6; 1: no "
                   "feedback).")
@json_option
@user_errors
def search_cmd(device_name: str, max_ms: float, seconds: float, backend: str, dtype: str, space_name: str | None,
               supernet: str | None, teacher: str | None, audio: str | None, candidates: tuple[str, ...],
               max_params: float | None, max_mb: float | None, tables: tuple[str, ...], seed: int, budget_evals: int,
               algorithm: str, audio_clips: int, out_dir: str | None, export_fmt: str | None, rounds: int | None,
               as_json: bool) -> None:
    """Find the best architecture AND deployment (backend, dtype) under a latency budget."""
    from ..devices import get_device
    from ..quality import CapacityObjective
    from ..search import (Limits, SearchSettings, find_deployments, fit_space_to_tables, resolve_space, run_search,
                          write_outputs)

    if supernet and not audio:
        raise UserError("--supernet needs --audio DIR: subnet quality is the distillation loss measured on that "
                        "audio; give a folder of wav/flac/ogg files (`edgekit data synth --out DIR` makes one)")
    if (teacher or audio) and not supernet:
        raise UserError("--teacher / --audio measure subnet quality through a supernet; add --supernet CKPT, or drop "
                        "them to rank by the declared capacity measure")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UserError(f"--seconds {seconds}: expected a positive input length")
    if export_fmt is not None:
        if backend not in ("auto", export_fmt):
            raise UserError(f"--export {export_fmt} with --backend {backend}: the winner is exported with the "
                            "backend it was searched for; drop --backend or make them equal")
        backend = export_fmt
    limits = Limits(max_ms, max_params * 1e6 if max_params is not None else None, max_mb)
    settings = SearchSettings(algorithm=algorithm, budget_evals=budget_evals, seed=seed)
    device = get_device(device_name)
    if rounds is not None and not (export_fmt and device.name == "host"):
        raise UserError(f"--rounds {rounds} needs --export FORMAT and --device host: the rounds time the exported "
                        "winner on this machine; add --export, or drop --rounds")
    deployments = find_deployments(device.name, backend, dtype, tables)

    loaded = None
    if supernet:
        from ..quality import DistillObjective, load_audio, load_supernet

        loaded = load_supernet(supernet, space_name)
        space, space_label = loaded.space, loaded.space.name
        teacher_model = None
        if teacher:
            import edgekit

            teacher_model, _ = edgekit.load(teacher)
            teacher_model.eval()
        batches = load_audio(audio, seconds, max_items=audio_clips)
        objective = DistillObjective(loaded, batches, teacher_model, teacher or "")
    else:
        space_label = space_name or "student"
        space = resolve_space(space_label)
        objective = CapacityObjective()
    space, notes = fit_space_to_tables(space, deployments, seconds)
    space_label = Path(space_label).name if space_label.endswith((".json", ".yaml", ".yml")) else space_label

    extra = []
    for cand in candidates:
        import edgekit

        model, spec = edgekit.load(cand)
        extra.append((spec, cand, model.eval()))

    def search(deps):
        if as_json:
            return run_search(space, space_label, deps, objective, limits, settings, device.name, seconds, extra,
                              None, notes)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("searching {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console(stderr=True, width=120), transient=True)
        with prog:
            task = prog.add_task(space_label, total=settings.budget_evals)
            return run_search(space, space_label, deps, objective, limits, settings, device.name, seconds, extra,
                              lambda done, total: prog.update(task, completed=done, total=total), notes)

    measured = feedback = None
    export_dir = out_dir or "search-export"
    if export_fmt and device.name == "host":
        # The winner can be timed here: close the loop (search_feedback).
        feedback = _search_measured(search, deployments, loaded, export_fmt, export_dir, seconds, rounds)
        result, measured = feedback.result, feedback.kept
    else:
        result = search(deployments)

    written: dict[str, str] = {}
    extra_json: dict = {}
    if feedback is not None and feedback.rounds:
        extra_json["measured_feedback"] = feedback.to_dict()
    best = result.best
    if best is not None and not objective.measured:
        arch_path = str(Path(out_dir) / "best_arch.json") if out_dir else "best_arch.json"
        extra_json["train_command"] = distill_command(arch_path, best.arch.time_reduction is not None)
    if out_dir:
        written = write_outputs(result, out_dir, extra_json)
        if best is not None and loaded is not None and best.genotype is not None:
            from ..convert import save
            from ..supernet import extract

            spec, sd = extract(loaded.net, best.genotype)
            written["weights"] = save(sd, spec, str(Path(out_dir) / "best_subnet.pt"),
                                      source={"supernet": str(Path(supernet).resolve()), "subnet": best.genotype.to_dict()})
    if best is None:
        msg = result.impossible_message()
        if feedback is not None and feedback.rounds:
            scaled = ", ".join(f"{d.label} x{d.measured_factor:.2f}" for d in result.deployments
                               if d.measured_factor != 1.0)
            msg += f" (predictions rescaled by the measured winners of {len(feedback.rounds)} search(es): {scaled})"
        raise UserError(msg)

    if export_fmt and measured is None:
        measured, _ = _export(result, loaded, export_fmt, export_dir, seconds, device.name)
    if feedback is not None:
        measured["rounds"] = extra_json["measured_feedback"]

    if as_json:
        data = result.to_dict()
        data.pop("candidates")
        data.update(extra_json)
        data["written"] = written
        data["export"] = measured
        echo_json(data)
        if result.estimated:
            click.echo(_estimated_note(result), err=True)
        return
    _print(result, written, extra_json, measured)


def _estimated_note(result) -> str:
    est = [d for d in result.deployments if d.estimated]
    names = ", ".join(f"{d.label}" for d in est)
    return (f"NOTE: the {result.device} latency table(s) ({names}) are ESTIMATED from a host table through a device "
            f"model, not measured on {result.device}; measure the device for real numbers")


def _export(result, loaded, fmt: str, out_dir: str, seconds: float, device: str) -> tuple[dict, dict]:
    """Export the winner with its searched backend and dtype; on host, time it. Returns what
    the output reports and the artifact's manifest entry."""
    import torch

    from .. import runtime
    from ..export import export_model
    from ..models import build_model

    best = result.best
    dep = result.deployments[best.deployment]
    if best.model is not None:
        model, spec, weights = best.model, best.arch, f"trained ({best.source})"
    elif loaded is not None:
        from ..supernet import extract

        spec, sd = extract(loaded.net, best.genotype)
        model = build_model(spec)
        model.load_state_dict(sd)
        weights = "extracted from the supernet"
    else:
        spec = best.arch
        with torch.random.fork_rng():
            torch.manual_seed(result.settings.seed)
            model = build_model(spec)
        weights = "random (untrained: train it with the command above before use)"
    spec = spec.replace(name=spec.name or "search-best")
    res = export_model(model.eval(), spec, fmt, dep.dtype, out_dir, seconds=seconds, threads=dep.threads)
    out = {"artifact": str(res.artifact_path), "format": fmt, "dtype": dep.dtype, "weights": weights,
           "predicted_ms": best.predicted_ms, "measured_factor": dep.measured_factor, "measured": None}
    if device == "host":
        stats = runtime.load(res.artifact_path, threads=dep.threads).time(warmup=5, runs=20)
        out["measured"] = stats.to_dict()
        out["measured_ms"] = stats.median_ms
    return out, res.manifest


def _search_measured(search, deployments, loaded, fmt: str, out_dir: str, seconds: float, rounds: int | None):
    """search_with_feedback with each round's winner exported to a scratch folder in `out_dir`
    and timed; the chosen round's artifact and manifest entry land in `out_dir`."""
    import shutil
    import tempfile

    from ..export import manifest as mf
    from ..search_feedback import search_with_feedback

    out = Path(out_dir)
    scratch: list[str] = []

    def measure(res):
        out.mkdir(parents=True, exist_ok=True)
        d = tempfile.mkdtemp(prefix=".search-round-", dir=out)
        scratch.append(d)
        info, entry = _export(res, loaded, fmt, d, seconds, "host")
        return info["measured_ms"], (info, entry)

    try:
        fb = search_with_feedback(search, deployments, measure, rounds=rounds)
        if fb.kept is not None:
            info, entry = fb.kept
            src = Path(info["artifact"])
            final = out / src.name
            os.replace(src, final)
            mf.add_entry(out, final.name, entry)
            info["artifact"] = str(final)
            fb.kept = info
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
    return fb


def _print(result, written: dict, extra_json: dict, measured: dict | None) -> None:
    con = console(width=120)
    obj = result.objective
    best = result.best
    t = Table(title=f"Pareto front: {result.space} on {result.device}, budget {result.limits.max_ms:g} ms "
                    f"for {result.seconds:g} s ({len(result.front)} points)")
    for col, just in (("", "left"), ("architecture", "left"), ("params", "right"), ("MACs", "right"),
                      ("predicted ms", "right"), ("deploy", "left"), ("table", "left"), (obj.label, "right")):
        t.add_column(col, justify=just)
    for c in _front_rows(result.front, best):
        dep = result.deployments[c.deployment]
        mark = "*" if c is best else ""
        t.add_row(mark, c.summary()[:48], fmt_count(c.params), fmt_count(c.macs(result.seconds)),
                  f"{c.predicted_ms:.2f}", dep.label, dep.table.provenance.method, f"{c.quality:.4g}")
    con.print(t)
    dep = result.deployments[best.deployment]
    con.print(f"chosen: {best.summary()} from {best.source}: {fmt_count(best.params)} params, "
              f"{fmt_count(best.macs(result.seconds))} MACs, predicted {best.predicted_ms:.2f} ms "
              f"({100 * best.predicted_ms / result.limits.max_ms:.0f}% of the budget) with {dep.label}, "
              f"{dep.threads} thread(s); {obj.label} {best.quality:.4g}")
    for d in result.deployments:
        con.print(f"table {d.label}: {d.table.path or '(in memory)'} - {d.table.provenance.describe()}")
    if result.estimated:
        con.print(_estimated_note(result))
    con.print(f"{result.evaluations} evaluations in {result.wall_s:.1f} s "
              f"({result.evaluations / max(result.wall_s, 1e-9):.0f}/s), seed {result.settings.seed}")
    for n in result.notes:
        con.print(f"note: {n}")
    if obj.measured:
        con.print(f"quality: {obj.description}")
    else:
        con.print("quality was NOT measured: candidates are ranked by a declared capacity measure (encoder "
                  "compute, GMAC per second of audio), not accuracy. Train the chosen student, then measure it:")
        con.print(f"  {extra_json['train_command']}", soft_wrap=True)  # one line: copyable
        if "best_arch.json" not in written:
            con.print("  (best_arch.json is written by re-running this search with --out DIR)")
    for name, path in written.items():
        con.print(f"wrote {path}")
    if measured is not None:
        con.print(f"exported {measured['artifact']} ({measured['format']} {measured['dtype']}, weights "
                  f"{measured['weights']})")
        if measured.get("measured_ms") is not None:
            ms = measured["measured_ms"]
            k = measured["measured_factor"]
            scaled = f" (the table's {measured['predicted_ms'] / k:.2f} ms x{k:.2f})" if k != 1.0 else ""
            con.print(f"measured on host: median {ms:.2f} ms vs predicted {measured['predicted_ms']:.2f} ms{scaled} "
                      f"({100 * (ms / measured['predicted_ms'] - 1):+.1f}%); budget {result.limits.max_ms:g} ms")
        fb = measured.get("rounds")
        if fb and len(fb["rounds"]) > 1:
            con.print(f"measured feedback: {len(fb['rounds'])} searches (a winner that missed its prediction by more "
                      f"than {100 * fb['tolerance']:.0f}% rescaled its deployment and the search ran again); chose "
                      f"round {fb['chosen_round'] + 1}")
            for r in fb["rounds"]:
                con.print(f"  round {r['round'] + 1}: {r['arch'][:48]} on {r['deploy']}: predicted "
                          f"{r['predicted_ms']:.2f} ms (x{r['factor']:.2f}), measured {r['measured_ms']:.2f} ms")


def register(group: click.Group) -> None:
    group.add_command(search_cmd)
