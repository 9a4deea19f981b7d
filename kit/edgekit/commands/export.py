"""`edgekit export` and `edgekit run` (timing lives in `edgekit bench`, commands/remote.py,
which uses the same edgekit.runtime for the host)."""
from __future__ import annotations

from pathlib import Path

import click

from ..arch import ArchSpec
from ..errors import UserError
from .common import echo_json, json_option, user_errors


def _load_model(target: str, subnet: str | None):
    from .inspect import parse_subnet
    import edgekit

    sub = parse_subnet(subnet)
    try:
        return edgekit.load(target, subnet=sub)
    except ImportError:
        # The convert package is optional in a partial checkout: presets still work.
        from .. import zoo
        if sub is not None or not zoo.is_preset(target):
            raise
        return zoo.create_model(target), zoo.get_spec(target)


@click.command("export")
@click.argument("model", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(["executorch", "onnx", "tflite", "all"]), required=True)
@click.option("--dtype", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Fixed input window length.")
@click.option("--subnet", default=None, help="Subnet of a supernet: default, max, min or JSON.")
@click.option("--calibration", "calibration_dir", type=click.Path(file_okay=False), default=None,
              help="Directory of wav/flac/ogg speech for static int8 calibration.")
@click.option("--quant", type=click.Choice(["static", "dynamic"]), default=None,
              help="int8 mode (default per format: executorch static, onnx static U8S8, tflite dynamic).")
@click.option("--threads", type=int, default=None, help="Runtime threads for the parity run.")
@click.option("--keep-heads", is_flag=True, help="Export the distillation prediction heads instead of the encoder.")
@click.option("--fp32-tol", type=float, default=1e-4, show_default=True, help="fp32 gate: max abs err / output scale.")
@click.option("--int8-cosine", type=float, default=0.99, show_default=True, help="int8 gate: mean per-frame cosine.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output directory.")
@json_option
@user_errors
def export_cmd(model: str, fmt: str, dtype: str, seconds: float, subnet: str | None, calibration_dir: str | None,
               quant: str | None, threads: int | None, keep_heads: bool, fp32_tol: float, int8_cosine: float,
               out_dir: str, as_json: bool) -> None:
    """Export MODEL (a preset or checkpoint) to .pte / .onnx / .tflite behind a parity gate."""
    from ..export import FORMATS, export_model

    if seconds <= 0:
        raise UserError(f"--seconds {seconds:g}: expected a positive window length such as 1.0")
    net, spec = _load_model(model, subnet)
    results = []
    for f in (FORMATS if fmt == "all" else (fmt,)):
        r = export_model(net, spec, f, dtype, out_dir, seconds=seconds, calibration_dir=calibration_dir,
                         source=model, fp32_rel_tol=fp32_tol, int8_min_cosine=int8_cosine, keep_heads=keep_heads,
                         quant=quant, threads=threads)
        for w in r.warnings:
            click.echo(f"warning: {w}", err=True)
        results.append(r)
        if not as_json:
            p, d = r.manifest["parity"], r.manifest["delegation"]
            deleg = "" if d["delegated_fraction"] is None else \
                f", {100 * d['delegated_fraction']:.1f}% delegated in {d['partitions']} partition(s)"
            click.echo(f"{r.artifact_path} ({r.manifest['size_bytes'] / 1e6:.2f} MB, {f} {dtype}): parity "
                       f"rel err {p['rel_err']:.2e}, cosine {p['cosine_mean']:.5f}{deleg}")
            pad = r.manifest["padded_widths"]
            if pad is not None:
                click.echo(f"  off-tile widths padded to multiples of {pad['multiple']} with zero channels (same "
                           f"outputs, faster kernels); the artifact runs: {ArchSpec.from_dict(pad['arch']).summary()}")
    if as_json:
        echo_json([{"artifact": str(r.artifact_path), **r.manifest} for r in results])


@click.command("run")
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--audio", required=True, type=click.Path(exists=True, dir_okay=False), help="wav/flac/ogg file.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write embeddings (.npy).")
@click.option("--threads", type=int, default=None)
@json_option
@user_errors
def run_cmd(artifact: str, audio: str, out_path: str | None, threads: int | None, as_json: bool) -> None:
    """Embeddings for an audio file: cut into the artifact's windows, run, concatenate frames."""
    import numpy as np

    from .. import runtime
    from ..export.atomic import atomic_target
    from ..export.calibration import read_audio, windows

    runner = runtime.load(artifact, threads=threads)
    wave = read_audio(audio)
    n = runner.input_samples
    wins = windows(wave, n) or [np.pad(wave, (0, n - len(wave)))]
    outs = [runner.run(w) for w in wins]
    emb = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs], axis=0)
    if out_path:
        path = Path(out_path)
        if path.suffix != ".npy":
            raise UserError(f"--out {out_path}: expected a .npy file name")
        with atomic_target(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, emb)
    info = {"artifact": artifact, "audio": audio, "seconds": len(wave) / 16000, "windows": len(wins),
            "window_samples": n, "frames": int(emb.shape[0]), "dim": int(emb.shape[1]), "out": out_path}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"{audio}: {len(wins)} window(s) of {n} samples -> {emb.shape[0]} frames x {emb.shape[1]}"
                   + (f", written to {out_path}" if out_path else ""))


def register(group: click.Group) -> None:
    group.add_command(export_cmd)
    group.add_command(run_cmd)
