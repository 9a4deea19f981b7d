"""Does timing over SSH change the figure? The same tiny ONNX artifact timed in-process (the
device-side code edgekit ships, run here) and through `edgekit.devices.ssh` against an OpenSSH
server on 127.0.0.1 (the Raspberry Pi path, loopback), alternating, same thread and core.

Prints and writes benchmarks/results/ssh_runner_overhead.json: median latency each way and
their ratio (expected ~1: the device-side loop is identical), plus the wall time of one
`bench_over_ssh` call cold (runtime and artifact copied) and warm (both reused).

    python benchmarks/ssh_runner_overhead.py [--rounds 5] [--runs 50]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the sshd harness of the test suite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()

    import torch

    from edgekit.devices import ssh
    from edgekit.devices.measurements import sha256_file
    from edgekit.runtime import device_main
    from edgekit.zoo import create_model
    from test_ssh_server import Server

    tmp = Path(tempfile.mkdtemp(prefix="edgekit-ssh-bench-"))
    model = create_model("tiny-hubert", seed=0)
    model.prepare_for_export()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).last_hidden_state

    art = tmp / "tiny-hubert.onnx"
    torch.onnx.export(Hidden(model).eval(), (torch.randn(1, 16000),), str(art), dynamo=False, opset_version=17)
    (tmp / "srv").mkdir()
    srv = Server(tmp / "srv")
    srv.start()
    try:
        target = srv.target(tmp)
        t0 = time.perf_counter()
        ssh.bench_over_ssh(art, "host", target, runs=3, warmup=1, threads=1, cpus=[0], record=False)
        cold_s = time.perf_counter() - t0
        local, remote, warm = [], [], []
        for _ in range(args.rounds):
            r = device_main.measure(str(art), args.runs, 5, 1, [0], sha256_file(art))
            local.append(r["stats"]["median_ms"])
            t0 = time.perf_counter()
            m = ssh.bench_over_ssh(art, "host", target, runs=args.runs, warmup=5, threads=1, cpus=[0], record=False)
            warm.append(time.perf_counter() - t0)
            remote.append(m.stats["median_ms"])
    finally:
        srv.stop()
    result = {
        "artifact": "tiny-hubert ONNX fp32, 1 s input", "threads": 1, "cpus": [0], "runs_per_round": args.runs,
        "rounds": args.rounds,
        "local_median_ms": statistics.median(local), "ssh_median_ms": statistics.median(remote),
        "ssh_over_local_ratio": statistics.median(remote) / statistics.median(local),
        "bench_wall_s_cold": cold_s, "bench_wall_s_warm_median": statistics.median(warm),
        "local_medians_ms": local, "ssh_medians_ms": remote,
    }
    out = ROOT / "benchmarks" / "results" / "ssh_runner_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, out)  # atomic: a reader never sees half a file
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()
                      if not k.endswith("medians_ms")}, indent=2))


if __name__ == "__main__":
    main()
