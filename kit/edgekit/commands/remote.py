"""`edgekit bench ARTIFACT [--device D ...]`: time an artifact here, on a Pi over SSH or on a
phone over adb, record the measurement with its conditions, and compare it with the latency
table's prediction. `remote_options` is shared with `edgekit profile`."""
from __future__ import annotations

from typing import Any, Callable

import click

from ..errors import UserError
from .common import echo_json, json_option, user_errors


def remote_options(fn: Callable) -> Callable:
    """--host/--port/--identity (SSH devices) and --serial/--tool (adb devices)."""
    for opt in reversed([
        click.option("--host", default=None, help="SSH devices: user@address of the device."),
        click.option("--port", type=int, default=None, help="SSH devices: port (default 22)."),
        click.option("--identity", type=click.Path(dir_okay=False), default=None,
                     help="SSH devices: private key file."),
        click.option("--serial", default=None, help="adb devices: serial (needed when several are connected)."),
        click.option("--tool", default=None,
                     help="adb devices: path on the phone of benchmark_model / onnxruntime_perf_test."),
    ]):
        fn = opt(fn)
    return fn


def measure(artifact: str, device_name: str, *, runs: int, warmup: int, threads: int | None, timeout_s: float,
            host: str | None = None, port: int | None = None, identity: str | None = None,
            serial: str | None = None, tool: str | None = None, record: bool = True) -> Any:
    """Route one measurement to the device's connection; returns the recorded Measurement."""
    from ..devices import get_device
    from ..devices.measurements import MeasurementStore, artifact_info

    device = get_device(device_name)
    store = MeasurementStore()
    if device.connection == "ssh":
        from ..devices.ssh import SshTarget, bench_over_ssh

        address = host or device.address
        if not address:
            raise UserError(f"device {device.name} is reached over SSH: give --host user@address")
        target = SshTarget.from_env(address, port=port, identity=identity)
        return bench_over_ssh(artifact, device.name, target, runs=runs, warmup=warmup, threads=threads,
                              timeout_s=timeout_s, store=store, record=record)
    if device.connection == "adb":
        from ..devices.android import bench_over_adb

        return bench_over_adb(artifact, device.name, serial=serial or device.address or None, threads=threads,
                              runs=runs, warmup=warmup, tool=tool, timeout_s=timeout_s, store=store, record=record)
    # This machine: the same device-side code a Pi runs, in-process.
    from ..devices.ssh import measurement_from_result
    from ..runtime import device_main

    info = artifact_info(artifact)
    cpus = list(device.affinity) or None
    try:
        result = device_main.measure(str(info.path), runs, warmup, threads, cpus, info.sha256)
    except device_main._Failure as e:
        raise UserError(str(e)) from None
    m = measurement_from_result(device.name, "local", info, result, runs, warmup, via="local")
    if record:
        store.add(m)
    return m


def prediction_for(m: Any, artifact: str) -> dict[str, Any]:
    """The latency table's prediction for the measured artifact (its ArchSpec, input length and
    dtype come from the manifest), or the reason there is none."""
    from ..devices.measurements import artifact_info

    entry = artifact_info(artifact).manifest
    if not entry or not isinstance(entry.get("arch"), dict):
        return {"available": False, "reason": "no manifest with the architecture next to the artifact"}
    from ..arch import ArchSpec
    from ..latency import Predictor, best_table

    try:
        spec = ArchSpec.from_dict(entry["arch"])
        seconds = float((entry.get("input") or {}).get("seconds") or 1.0)
        table = best_table(m.device, m.format, entry.get("dtype", "fp32"))
        predicted = Predictor(table).predict_ms(spec, seconds)
    except (UserError, ValueError, KeyError) as e:
        return {"available": False, "reason": " ".join(str(e).split())}
    prov = table.provenance
    return {"available": True, "predicted_ms": predicted, "table": str(table.path), "estimated": prov.estimated,
            "table_threads": prov.threads, "ratio": m.headline_ms / predicted if predicted > 0 else None}


@click.command("bench")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", "device_name", default="host", show_default=True,
              help="Where to run: host, or a registered device (edgekit devices).")
@click.option("--runs", type=int, default=30, show_default=True, help="Timed runs.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the device's).")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True,
              help="Seconds the run on the device may take.")
@click.option("--no-record", is_flag=True, help="Do not add the result to the measurement store.")
@remote_options
@json_option
@user_errors
def bench_cmd(artifact: str, device_name: str, runs: int, warmup: int, threads: int | None, timeout_s: float,
              no_record: bool, as_json: bool, **remote: Any) -> None:
    """Time an exported artifact on a device and compare it with the latency table."""
    from ..devices.measurements import MeasurementStore

    m = measure(artifact, device_name, runs=runs, warmup=warmup, threads=threads, timeout_s=timeout_s,
                record=not no_record, **remote)
    pred = prediction_for(m, artifact)
    previous = [p for p in MeasurementStore().previous(m)][:3] if not no_record else []
    if as_json:
        echo_json({"measurement": m.to_dict(), "conditions": m.conditions(), "prediction": pred,
                   "previous": [{"headline_ms": p.headline_ms, "measured_at": p.measured_at} for p in previous]})
        return
    where = f"{m.device} ({m.address})" if m.address and m.address != "local" else m.device
    click.echo(f"{m.artifact} on {where} with {m.tool}: {m.line()}")
    c = m.conditions()
    extras = [f"threads {c['threads']}" if c["threads"] else "threads: the tool's choice",
              f"cores {','.join(map(str, c['affinity']))}" if c["affinity"] else "not pinned",
              f"governor {', '.join(c['governor'])}" if c["governor"] else "governor unknown"]
    if m.load_ms is not None:
        extras.append(f"load {m.load_ms:.1f} ms")
    if m.peak_rss_mb is not None:
        extras.append(f"peak memory {m.peak_rss_mb:.1f} MB")
    click.echo("conditions: " + ", ".join(extras))
    for w in m.warnings:
        click.echo(f"warning: {w}")
    if pred["available"]:
        kind = "ESTIMATED" if pred["estimated"] else "measured"
        click.echo(f"table prediction: {pred['predicted_ms']:.2f} ms ({kind} table {pred['table']}, "
                  f"{pred['table_threads']} thread(s)); measured / predicted = {pred['ratio']:.2f}")
    else:
        click.echo(f"table prediction: none ({pred['reason']})")
    for p in previous:
        click.echo(f"earlier under the same conditions: {p.headline_ms:.2f} ms")


def register(group: click.Group) -> None:
    group.add_command(bench_cmd)

