"""`edgekit devices`, `edgekit profile` and `edgekit predict`."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
from rich.table import Table

from ..errors import UserError
from .common import console, echo_json, json_option, user_errors
from .remote import remote_options

_BACKENDS = click.Choice(["executorch", "onnx", "tflite"])
_DTYPES = click.Choice(["fp32", "int8"])


def _estimated_warning(prov) -> str:
    return (f"NOTE: {prov.device} {prov.backend} {prov.dtype} figures are ESTIMATED from a host table through a "
            f"device model, not measured on {prov.device}; measure the device for real numbers")


# --------------------------------------------------------------------------- devices


@click.command("devices")
@json_option
@user_errors
def devices_cmd(as_json: bool) -> None:
    """List target devices, how they are reached, and their latency tables."""
    from ..devices import list_devices, user_device_dir
    from ..latency import find_tables

    tables = find_tables()
    rows = []
    for d in list_devices():
        mine = [{"path": t.path, "backend": t.provenance.backend, "dtype": t.provenance.dtype,
                 "threads": t.provenance.threads, "method": t.provenance.method, "date": t.provenance.date,
                 "entries": t.entries} for t in tables if t.provenance.device == d.name]
        rows.append({**d.to_dict(), "measurable_here": d.measurable_here, "tables": mine})
    if as_json:
        echo_json({"devices": rows, "user_device_dir": str(user_device_dir())})
        return
    table = Table(title="edgekit devices")
    for col, just in (("device", "left"), ("cores", "right"), ("threads", "right"), ("affinity", "left"),
                      ("backend", "left"), ("reach", "left"), ("tables", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        tabs = "; ".join(f"{t['backend']} {t['dtype']} {t['method']}" for t in r["tables"]) or "none"
        aff = ",".join(map(str, r["affinity"])) or "any"
        table.add_row(r["name"], str(r["cores"]), str(r["default_threads"]), aff, r["default_backend"],
                      r["connection"], tabs)
    con = console()
    con.print(table)
    con.print(f"add a device: a TOML or JSON file in {user_device_dir()} (see docs/latency-tables.md)")


# --------------------------------------------------------------------------- profile


def _progress():
    """A rich progress bar on stderr, driven by the library's (what, done, total) callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console(stderr=True), transient=False)
    tasks: dict[str, int] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = prog.add_task(f"measuring {what}", total=total)
        prog.update(tasks[what], completed=done, total=total)

    return prog, update


@click.command("profile")
@click.option("--device", "device_name", default="host", show_default=True, help="Device to measure (edgekit devices).")
@click.option("--backend", type=_BACKENDS, required=True)
@click.option("--dtype", type=_DTYPES, default="fp32", show_default=True)
@click.option("--space", default="edge", show_default=True,
              help="Grid: edge (LightHuBERT and student choices), lighthubert-base, lighthubert-small, tiny, or a grid JSON file.")
@click.option("--seconds", type=float, default=None, help="Input length (default: the grid's, 1.0 s).")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the device's).")
@click.option("--affinity", default=None, help="Pin to these cores, e.g. 0,1 (default: the device's).")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs per artifact.")
@click.option("--runs", type=int, default=15, show_default=True, help="Timed runs per artifact (median, p10, p90).")
@click.option("--validate", "n_validate", type=int, default=0, help="Measure N random held-out models end to end.")
@click.option("--min-time-ms", "min_time_ms", type=float, default=500.0, show_default=True,
              help="Per timing pass, add runs until about this long is timed (0: exactly --runs runs).")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved timing passes per block; the median of them is kept.")
@click.option("--model-rounds", type=int, default=None,
              help="Interleaved timing passes per whole model (anchors, --validate) [default: 9]: on a shared "
                   "machine one pass strays about 10% from the model's level, the median of 9 about 4%.")
@click.option("--estimate", "estimate_for", default=None,
              help="Also derive estimated tables for these devices (comma list) from the measured one.")
@click.option("--estimate-dir", type=click.Path(file_okay=False), default=None,
              help="Where estimated tables go (default: the user table dir).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the table here (it always goes to the user table dir).")
@click.option("--lower-jobs", type=click.IntRange(1, 64), default=None,
              help="Processes that lower artifacts while nothing is timed (default: one per core of this machine "
                   "the profile may use, at most 4).")
@click.option("--remeasure", is_flag=True,
              help="Start a fresh measurement cache (the old one is kept as .jsonl.old), e.g. after a noisy run.")
@remote_options
@json_option
@user_errors
def profile_cmd(device_name: str, backend: str, dtype: str, space: str, seconds: float | None, threads: int | None,
                affinity: str | None, warmup: int, runs: int, n_validate: int, min_time_ms: float, rounds: int,
                model_rounds: int | None, estimate_for: str | None,
                estimate_dir: str | None, output: str | None, lower_jobs: int | None, remeasure: bool, as_json: bool,
                **remote: object) -> None:
    """Measure a latency table: each block of a grid exported and timed on the device, then a
    few whole models for the correction; results are cached, so an interrupted run resumes."""
    from ..devices import connect, get_device, pin_affinity
    from ..export.report import REWRITES_REVISION
    from ..latency import Provenance, save_table, user_table_path
    from ..latency.grid import get_grid
    from ..latency.accuracy import validate
    from ..latency.cache import MeasurementCache
    from ..latency.measure import runtime_measure
    from ..latency.profile import MODEL_ROUNDS, build_table, check_threads, now_iso

    model_rounds = MODEL_ROUNDS if model_rounds is None else model_rounds
    if runs < 1 or warmup < 0 or n_validate < 0 or rounds < 1 or model_rounds < 1 or not min_time_ms >= 0:
        raise UserError(f"--runs {runs} --warmup {warmup} --validate {n_validate} --rounds {rounds} --model-rounds "
                        f"{model_rounds} --min-time-ms {min_time_ms:g}: expected runs and both rounds >= 1, the "
                        "others >= 0")
    device = get_device(device_name)
    threads = threads or device.default_threads
    check_threads(threads, device.cores)
    cores = tuple(int(c) for c in affinity.split(",")) if affinity else device.affinity
    # --host/--port/--identity (SSH), --serial/--tool (adb); remote runs pin to `cores` on the device.
    conn = connect(device, cpus=cores if device.connection != "local" else None, **remote)
    pinned = pin_affinity(cores) if device.connection == "local" else list(cores)
    grid = get_grid(space)
    if seconds is not None:
        if seconds <= 0:
            raise UserError(f"--seconds {seconds}: expected a positive length")
        grid = dataclasses.replace(grid, seconds=(seconds,))
    env = conn.environment()
    prov = Provenance(device=device.name, backend=backend, dtype=dtype, threads=threads, method="measured",
                      date=now_iso(), affinity=tuple(pinned), runtime_versions=env.pop("runtime_versions", {}),
                      cpu=env, space=grid.name, seconds=grid.seconds, warmup=warmup, runs=runs,
                      export_rewrites=REWRITES_REVISION)
    cache = MeasurementCache.for_config(device.name, backend, dtype, threads)
    if remeasure and cache.path.exists():
        cache.path.replace(cache.path.with_suffix(".jsonl.old"))
        cache = MeasurementCache(cache.path)
    measure = runtime_measure(backend, dtype, threads, conn, warmup=warmup, runs=runs, min_timed_ms=min_time_ms,
                              lower_workers=lower_jobs)
    t0 = time.perf_counter()
    prog, update = _progress()
    try:
        with prog:
            table = build_table(grid, measure, cache, prov, update, rounds=rounds, model_rounds=model_rounds)
            accuracy = None
            if n_validate:
                accuracy = validate(table, grid, n_validate, grid.seconds[0], measure, cache, progress=update,
                                    rounds=model_rounds)
                table = dataclasses.replace(table, validation=accuracy.to_dict())
    finally:
        measure.close()  # the lowering workers
    elapsed = time.perf_counter() - t0
    dest = user_table_path(device.name, backend, dtype)
    save_table(table, dest)
    # Estimates name the host table they came from (provenance.derivation.source_table).
    table = dataclasses.replace(table, path=str(dest))
    if output:
        save_table(table, output)
    estimated = []
    if estimate_for:
        from ..latency.estimate import estimate_table, host_figures

        figures = host_figures(threads)
        for name in [n.strip() for n in estimate_for.split(",") if n.strip()]:
            target = get_device(name)
            est = estimate_table(table, device, target, figures, backend=backend)
            path = Path(estimate_dir) / f"{name}-{backend}-{dtype}.json" if estimate_dir else \
                user_table_path(name, backend, dtype)
            save_table(est, path)
            estimated.append({"device": name, "path": str(path),
                              "sanity_checks": est.provenance.derivation["sanity_checks"]})
    result = {"table": str(dest), "output": output, "entries": len(table.entries), "seconds_taken": round(elapsed, 1),
              "correction": {"scale": table.correction.scale, "per_block_ms": table.correction.per_block_ms},
              "validation": accuracy.to_dict() if accuracy else None, "estimated": estimated,
              "provenance": dataclasses.asdict(table.provenance)}
    if as_json:
        echo_json(result)
        return
    con = console()
    con.print(f"measured {len(table.entries)} blocks of grid {grid.name} on {device.name} ({backend} {dtype}, "
              f"{threads} thread(s)) in {elapsed:.0f} s; cache {cache.path}")
    build = table.provenance.build
    if build:
        secs = build["seconds"]
        con.print(f"table built in {secs['total']:.0f} s: blocks {secs['blocks']:.0f} s (anchor models lowered "
                  f"beside them), re-timing {secs['rechecking']:.0f} s, anchors {secs['anchors']:.0f} s; "
                  f"{build['measured']} measured now, {build['from_journal']} from the journal")
    rechecked = table.provenance.rechecked
    if rechecked:
        con.print(f"re-timed {len(rechecked['blocks'])} block(s) more than {rechecked['ratio']:g}x off their group "
                  f"(provenance.rechecked)")
    con.print(f"correction: whole = {table.correction.scale:.3f} x sum(blocks) "
              f"{table.correction.per_block_ms:+.3f} ms x blocks")
    if accuracy:
        con.print(accuracy.line())
    con.print(f"table written to {dest}" + (f" and {output}" if output else ""))
    for e in estimated:
        con.print(f"ESTIMATED table for {e['device']} written to {e['path']}")


# --------------------------------------------------------------------------- predict


@click.command("predict")
@click.argument("target", metavar="MODEL_OR_ARCH_JSON")
@click.option("--device", "device_name", required=True, help="Device (edgekit devices).")
@click.option("--backend", type=_BACKENDS, default=None, help="Default: the device's default backend.")
@click.option("--dtype", type=_DTYPES, default="fp32", show_default=True)
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Input length.")
@click.option("--subnet", default=None, help="Subnet of a supernet preset: default, max, min or JSON.")
@click.option("--table", "table_path", type=click.Path(dir_okay=False), default=None,
              help="Use this table instead of the best one known for the device.")
@click.option("--blocks", "show_blocks", is_flag=True, help="Show the per-block breakdown.")
@json_option
@user_errors
def predict_cmd(target: str, device_name: str, backend: str | None, dtype: str, seconds: float, subnet: str | None,
                table_path: str | None, show_blocks: bool, as_json: bool) -> None:
    """Predict the latency of a model on a device from its latency table."""
    from ..devices import get_device
    from ..latency import Predictor, best_table, load_table
    from .inspect import resolve_spec

    if seconds <= 0:
        raise UserError(f"--seconds {seconds}: expected a positive length")
    device = get_device(device_name)
    backend = backend or device.default_backend
    spec, source = resolve_spec(target, subnet)
    if table_path:
        table = load_table(table_path, backend=backend, dtype=dtype, device=device.name)
    else:
        table = best_table(device.name, backend, dtype)
    pred = Predictor(table).explain(spec, seconds)
    prov = table.provenance
    if as_json:
        echo_json({"model": spec.name or target, "source": source, "device": device.name, "backend": backend,
                   "dtype": dtype, "seconds": seconds, "predicted_ms": round(pred.predicted_ms, 4),
                   "estimated": prov.estimated, "table": table.path,
                   "provenance": dataclasses.asdict(prov), "validation": table.validation,
                   **{k: v for k, v in pred.to_dict().items() if k != "predicted_ms" and (show_blocks or k != "blocks")}})
        if prov.estimated:
            click.echo(_estimated_warning(prov), err=True)
        return
    con = console()
    con.print(f"{spec.name or target} on {device.name} ({backend} {dtype}, {seconds:g} s): "
              f"predicted {pred.predicted_ms:.2f} ms")
    con.print(f"table: {table.path} - {prov.describe()}")
    if prov.estimated:
        con.print(_estimated_warning(prov))
    if table.validation:
        v = table.validation
        con.print(f"table accuracy on {v['n']} held-out models: MAPE {v['mape_pct']:.2f}%, "
                  f"{100 * v['within_10pct']:.0f}% within +-10%")
    if pred.interpolated:
        con.print(f"{pred.interpolated} of {len(pred.blocks)} blocks were not in the table (interpolated or extrapolated from measured neighbours)")
    if show_blocks:
        t = Table()
        for col, just in (("block", "left"), ("ms", "right"), ("source", "left"), ("signature", "left")):
            t.add_column(col, justify=just)
        for b in pred.blocks:
            t.add_row(b.name, f"{b.ms:.3f}", b.source, b.key)
        con.print(t)


def register(group: click.Group) -> None:
    group.add_command(devices_cmd)
    group.add_command(profile_cmd)
    group.add_command(predict_cmd)
