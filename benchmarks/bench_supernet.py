"""How cheap are the search's inner calls? Subnet sampling / mutation / crossover rates on the
published spaces, and the elastic supernet forward against extracting + building a standalone
model per candidate (the tiny supernet, so it runs anywhere in seconds).

    python benchmarks/bench_supernet.py [--repeats 5]

Prints a summary and writes benchmarks/results/supernet.json (medians over repeats; the ratio
is measured in the same run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time

import torch

from edgekit.models import build_model
from edgekit.space import get_space
from edgekit.supernet import LightHubertSupernet, extract


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def space_rates(name: str, repeats: int, n: int = 5000) -> dict:
    space = get_space(name)
    rng = random.Random(0)
    pool = [space.sample(rng) for _ in range(256)]
    out = {}
    for label, fn in (("sample", lambda: space.sample(rng)),
                      ("mutate", lambda: space.mutate(pool[rng.randrange(256)], rng, 0.2)),
                      ("crossover", lambda: space.crossover(pool[rng.randrange(256)], pool[rng.randrange(256)], rng)),
                      ("validate", lambda: space.validate(pool[rng.randrange(256)]))):
        out[f"{label}_per_s"] = statistics.median(_rate(fn, n) for _ in range(repeats))
    return out


def elastic_vs_extract(repeats: int, candidates: int = 20) -> dict:
    torch.manual_seed(0)
    net = LightHubertSupernet("tiny-supernet").eval()
    space = net.space
    wave = torch.randn(2, 16000)
    rng = random.Random(1)
    subs = [space.sample(rng) for _ in range(candidates)]

    def elastic():
        with torch.no_grad():
            for s in subs:
                net.set_subnet(s)
                net(wave)

    def extracted():
        with torch.no_grad():
            for s in subs:
                spec, sd = extract(net, s)
                model = build_model(spec)
                model.load_state_dict(sd)
                model.eval()(wave)

    elastic(), extracted()  # warm-up
    t_el = statistics.median(1.0 / _rate(elastic, 1) for _ in range(repeats))
    t_ex = statistics.median(1.0 / _rate(extracted, 1) for _ in range(repeats))
    return {"candidates": candidates, "input_seconds": 1.0, "batch": 2,
            "elastic_s_per_candidate": t_el / candidates, "extract_s_per_candidate": t_ex / candidates,
            "extract_over_elastic": t_ex / t_el}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "supernet.json"))
    args = ap.parse_args()
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
              "repeats": args.repeats,
              "spaces": {n: space_rates(n, args.repeats) for n in ("lighthubert-base", "lighthubert-small")},
              "tiny_supernet": elastic_vs_extract(args.repeats)}
    for name, r in result["spaces"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in r.items()))
    t = result["tiny_supernet"]
    print(f"tiny supernet, per candidate: elastic {t['elastic_s_per_candidate'] * 1e3:.1f} ms, "
          f"extract+build {t['extract_s_per_candidate'] * 1e3:.1f} ms ({t['extract_over_elastic']:.2f}x)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(args.out), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
