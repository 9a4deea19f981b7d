"""`edgekit models` and `edgekit inspect`."""
from __future__ import annotations

import json

import click
from rich.table import Table

from .. import zoo
from ..arch import ArchSpec, blocks
from ..errors import UserError
from .common import console, echo_json, fmt_count, json_option, user_errors


@click.command("models")
@click.option("--all", "show_tiny", is_flag=True, help="Include the tiny test presets.")
@click.option("--seconds", default=1.0, show_default=True, help="Input length for the MAC count.")
@json_option
@user_errors
def models_cmd(show_tiny: bool, seconds: float, as_json: bool) -> None:
    """List the named presets with parameters and MACs."""
    rows = []
    for name in zoo.list_presets(include_tiny=show_tiny):
        preset = zoo.get_preset(name)
        spec = preset.build()
        rows.append({"name": name, "params": spec.param_count(), "macs": spec.mac_count(seconds),
                     "seconds": seconds, "summary": spec.summary(), "description": preset.description,
                     "tiny": preset.tiny})
    if as_json:
        echo_json(rows)
        return
    table = Table(title=f"edgekit presets (MACs for {seconds:g} s of 16 kHz audio)")
    for col, just in (("name", "left"), ("params", "right"), ("MACs", "right"), ("description", "left")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(r["name"], fmt_count(r["params"]), fmt_count(r["macs"]), r["description"])
    console().print(table)


def resolve_spec(target: str, subnet: str | None) -> tuple[ArchSpec, str]:
    """A preset name, an ArchSpec JSON file or a checkpoint -> (spec, where it came from)."""
    import os

    sub = parse_subnet(subnet)
    if zoo.is_preset(target):
        if sub is not None:
            from ..supernet import subnet_spec_for_preset
            return subnet_spec_for_preset(target, sub), f"preset {target} with subnet"
        return zoo.get_spec(target), f"preset {target}"
    if os.path.exists(target):
        if target.endswith(".json"):
            try:
                with open(target) as f:
                    return ArchSpec.from_json(f.read()), target
            except ValueError as e:
                raise UserError(f"{target}: not a valid ArchSpec: {e}") from None
        from ..convert import load
        _, spec = load(target, subnet=sub)
        return spec, target
    if os.sep in target or os.path.splitext(target)[1] in (".pt", ".pth", ".ckpt", ".json", ".bin", ".safetensors"):
        raise UserError(f"no such file: {target} (give an existing checkpoint, an ArchSpec .json or a preset name)")
    raise zoo.UnknownPresetError(target)


def parse_subnet(subnet: str | None):
    if subnet is None:
        return None
    if subnet in ("default", "max", "min"):
        return subnet
    try:
        return json.loads(subnet)
    except json.JSONDecodeError:
        raise UserError(f"--subnet {subnet!r} is not JSON; give default, max, min or a JSON object "
                        "such as '{\"embed_dim\": 640, \"heads\": [10, ...], ...}'") from None


@click.command("inspect")
@click.argument("target", metavar="NAME|PATH")
@click.option("--seconds", default=1.0, show_default=True, help="Input length for MACs and frames.")
@click.option("--subnet", default=None, help="Subnet of a supernet: default, max, min or JSON.")
@json_option
def inspect_cmd(target: str, seconds: float, subnet: str | None, as_json: bool) -> None:
    """Show an architecture and its per-block parameters and MACs."""
    try:
        spec, source = resolve_spec(target, subnet)
    except zoo.UnknownPresetError as e:
        click.echo(f"Error: {e}", err=True)
        raise SystemExit(2)
    except (UserError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    rows = blocks(spec, seconds)
    samples = int(round(seconds * 16000))
    if as_json:
        echo_json({"source": source, "arch": spec.to_dict(), "seconds": seconds,
                   "params": spec.param_count(), "params_without_heads": spec.param_count(False),
                   "macs": spec.mac_count(seconds), "frames": spec.output_frames(samples),
                   "frame_rate_hz": spec.frame_rate_hz(),
                   "blocks": [r.__dict__ for r in rows]})
        return
    con = console()
    con.print(f"{spec.name or target}: {spec.summary()}")
    con.print(f"source: {source}")
    con.print(f"parameters: {spec.param_count():,} ({spec.param_count(False):,} without training heads)")
    con.print(f"MACs for {seconds:g} s: {spec.mac_count(seconds):,}; output {spec.output_frames(samples)} "
              f"frames x {spec.embed_dim} at {spec.frame_rate_hz():g} Hz")
    table = Table()
    for col, just in (("block", "left"), ("kind", "left"), ("frames", "right"), ("params", "right"),
                      ("MACs", "right"), ("share", "right")):
        table.add_column(col, justify=just)
    total = sum(r.macs for r in rows if not r.training_only) or 1
    for r in rows:
        share = "-" if r.training_only else f"{100 * r.macs / total:.1f}%"
        name = r.name + (" (training only)" if r.training_only else "")
        table.add_row(name, r.kind, str(r.frames), f"{r.params:,}", f"{r.macs:,}", share)
    con.print(table)


def register(group: click.Group) -> None:
    group.add_command(models_cmd)
    group.add_command(inspect_cmd)
