"""Training throughput per method: seconds of audio processed per second of wall-clock.

Each method trains a small model for a few steps at a small batch on a synthetic corpus; the
first steps are warm-up and not timed; the median of the timed steps is reported. CPU always,
CUDA too when available. Writes benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--steps 8] [--batch-size 4] [--crop-seconds 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgekit import zoo
from edgekit.train.data import AudioFolder
from edgekit.train.distill import DistilHubertTask, FitHubertTask
from edgekit.train.prune import PruneConfig, PruneTask
from edgekit.train.supernet_train import SupernetTask
from edgekit.train.synth import synth_corpus

# Small models so the benchmark runs on 2 CPU cores in a minute: a HuBERT-shaped teacher with a
# 32-channel extractor; students as in the tests.
METHODS = {
    "distilhubert": lambda t: DistilHubertTask(t, zoo.get_spec("tiny-distilhubert")),
    "fithubert": lambda t: FitHubertTask(t, zoo.get_spec("tiny-fithubert")),
    "lighthubert-stage2": lambda t: SupernetTask(t, "tiny-supernet", stage=2, random_subnets=2),
    "prune": lambda t: PruneTask(t, zoo.create_model("tiny-hubert"), PruneConfig(target_sparsity=0.5, warmup_steps=5)),
}


def bench(method: str, device: torch.device, data: AudioFolder, steps: int, batch: int, warmup: int = 2) -> dict:
    teacher = zoo.create_model("tiny-hubert")
    task = METHODS[method](teacher).to(device)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    times, seconds = [], 0.0
    for step in range(steps + warmup):
        b = data.step_batch(0, step, 0, batch)
        wave, lengths = b.wave.to(device), b.lengths.to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = task(wave, lengths, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        task.before_optimizer_step()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            seconds = b.seconds
    med = statistics.median(times)
    return {"method": method, "device": device.type, "batch_size": batch, "audio_seconds_per_step": seconds,
            "median_step_s": med, "audio_seconds_per_second": seconds / med, "timed_steps": len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop-seconds", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        synth_corpus(tmp, 8, seconds=(args.crop_seconds, args.crop_seconds * 2), method="synthetic")
        data = AudioFolder(tmp, "all", crop_seconds=args.crop_seconds)
        for device in devices:
            for method in METHODS:
                r = bench(method, device, data, args.steps, args.batch_size)
                rows.append(r)
                print(f"{method:20s} {device.type:5s} {r['audio_seconds_per_second']:8.1f} s audio/s "
                      f"(median step {r['median_step_s'] * 1000:.0f} ms, batch {args.batch_size} x {args.crop_seconds:g} s)")
    result = {"benchmark": "train_throughput", "torch": torch.__version__, "machine": platform.machine(),
              "cpu_count": os.cpu_count(), "threads": args.threads, "crop_seconds": args.crop_seconds,
              "note": "tiny models (tiny-hubert teacher); compare ratios measured in the same run",
              "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
