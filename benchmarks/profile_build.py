"""How long a latency table takes to build from nothing: `edgekit profile` run into an empty
data directory (no journal to resume from), against the 15-minute goal per backend and dtype.

    python benchmarks/profile_build.py --backend executorch --dtype int8 [--space lighthubert-base]

Writes benchmarks/results/profile_build_<backend>_<dtype>[_<suffix>].json with the wall time
the command took, the table's own record of its phases (provenance.build) and the host. The
table is built in a temporary data directory and removed afterwards, so the user's tables and
journals are not touched; `--data-dir DIR` keeps it (DIR must be empty or absent).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.latency import load_table
from edgekit.latency.table import write_json_atomic
from result_file import result_path

GOAL_SECONDS = 15 * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, choices=["executorch", "onnx", "tflite"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--space", default="lighthubert-base")
    ap.add_argument("--data-dir", default=None, help="build into this (empty) data directory and keep it")
    ap.add_argument("--suffix", default="",
                    help="appended to the result's file name (profile_build_B_T_SUFFIX.json), e.g. a host's name")
    args = ap.parse_args()
    dest = result_path(f"profile_build_{args.backend}_{args.dtype}", args.suffix)
    if args.data_dir and Path(args.data_dir).exists() and any(Path(args.data_dir).iterdir()):
        raise SystemExit(f"--data-dir {args.data_dir}: not empty; a build from nothing needs an empty directory")
    data = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="edgekit-build-"))
    table_path = data / "built-table.json"
    cmd = [sys.executable, "-m", "edgekit.cli", "profile", "--device", "host", "--backend", args.backend,
           "--dtype", args.dtype, "--space", args.space, "-o", str(table_path)]
    env = {**os.environ, "EDGEKIT_DATA_DIR": str(data)}
    t0 = time.perf_counter()
    try:
        # The command's progress and summary are shown as it runs; the table is read back.
        done = subprocess.run(cmd, env=env, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"edgekit profile exited {done.returncode}")
        table = load_table(table_path, backend=args.backend, dtype=args.dtype)
    finally:
        if not args.data_dir:
            shutil.rmtree(data, ignore_errors=True)
    prov = table.provenance
    build = prov.build
    result = {"benchmark": "profile_build", "backend": args.backend, "dtype": args.dtype, "space": args.space,
              "command": "EDGEKIT_DATA_DIR=<empty> edgekit profile --device host --backend "
                         f"{args.backend} --dtype {args.dtype} --space {args.space}",
              "date": prov.date, "cpu": prov.cpu, "runtime_versions": prov.runtime_versions,
              "wall_seconds": round(wall, 1), "build": build, "entries": len(table.entries),
              "goal_seconds": GOAL_SECONDS,
              "met": build is not None and build["seconds"]["total"] < GOAL_SECONDS and build["from_journal"] == 0}
    write_json_atomic(dest, result)
    secs = build["seconds"] if build else {}
    print(f"{args.backend} {args.dtype} table built in {secs.get('total', wall):.0f} s "
          f"(blocks {secs.get('blocks', 0):.0f} s, re-timing {secs.get('rechecking', 0):.0f} s, anchors "
          f"{secs.get('anchors', 0):.0f} s; command {wall:.0f} s); goal < {GOAL_SECONDS} s: "
          f"{'met' if result['met'] else 'not met'}; written to {dest}")


if __name__ == "__main__":
    main()
