"""Where a benchmark script writes its JSON result: benchmarks/results/<stem>[_<suffix>].json.

The suffix keeps a second run (another host, another seed) beside the default one instead of
over it."""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(stem: str, suffix: str = "") -> Path:
    """The result file for `stem`; exits with a one-line reason when `suffix` would make an odd
    file name."""
    if suffix and not suffix.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--suffix {suffix!r}: use letters, digits, - and _ only")
    return RESULTS / (f"{stem}_{suffix}.json" if suffix else f"{stem}.json")
