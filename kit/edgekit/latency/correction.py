"""The correction fitted on whole anchor models: what a sum of blocks misses."""
from __future__ import annotations

import math

import numpy as np

from ..arch import ArchSpec
from .predict import Predictor
from .table import Correction, Entry


# Kinds whose blocks get their own factor when enough anchors are measured (see Correction).
KIND_SCALED = ("conv",)
_MIN_ANCHORS_FOR_KINDS = 6


def fit_correction(predictor: Predictor, specs: list[ArchSpec], measured: list[Entry], seconds: float,
                   names: list[str] | None = None) -> Correction:
    """Fit measured = scale * (sum of other blocks + k * sum of conv blocks) + per_block_ms * n
    by relative least squares.

    The conv factor k (Correction.kind_scale) is fitted only with at least six anchors whose
    conv share varies, and kept only when positive; otherwise k = 1. With one model only the
    scale is fitted. A non-positive scale would mean the blocks do not explain the models at
    all; then scale-only is used (and the validation will show it).

    per_block_ms is bounded by the cheapest blocks of the table: a block artifact's call
    overhead (what a whole model saves per block) cannot exceed a whole cheap block, and a
    whole model cannot pay much more per block than one. An unbounded fit on a few noisy
    anchors once gave +4 ms a block, which priced a 13-block tiny model at 10x its blocks.
    """
    if not specs:
        return Correction()
    conv, rest, counts, ys, rows = [], [], [], [], []
    for i, (spec, m) in enumerate(zip(specs, measured)):
        sigs = predictor.signatures(spec, seconds)
        c = sum(predictor.block_ms(g)[0] for g in sigs if g.kind in KIND_SCALED)
        r = sum(predictor.block_ms(g)[0] for g in sigs if g.kind not in KIND_SCALED)
        conv.append(c), rest.append(r), counts.append(len(sigs)), ys.append(m.median_ms)
        rows.append({"name": (names[i] if names else spec.name) or f"model{i}", "measured_ms": round(m.median_ms, 4),
                     "sum_blocks_ms": round(c + r, 4), "n_blocks": len(sigs)})
    y, w = np.array(ys), 1.0 / np.array(ys)
    c_arr, r_arr, n_arr = np.array(conv), np.array(rest), np.array(counts, dtype=float)
    bound = _per_block_bound(predictor)
    shares = c_arr / np.maximum(c_arr + r_arr, 1e-12)
    if len(specs) >= _MIN_ANCHORS_FOR_KINDS and shares.max() - shares.min() > 0.1:
        fit = _fit_terms([c_arr, r_arr], n_arr, y, w, bound)
        if fit is not None:
            (k_conv, k_rest), per_block = fit
            return Correction(scale=k_rest, per_block_ms=per_block, fitted_on=tuple(rows),
                              kind_scale={"conv": k_conv / k_rest})
    fit = _fit_terms([c_arr + r_arr], n_arr, y, w, bound) if len(specs) >= 3 and len(set(counts)) > 1 else None
    if fit is not None:
        (scale,), per_block = fit
        return Correction(scale=scale, per_block_ms=per_block, fitted_on=tuple(rows))
    s_arr = c_arr + r_arr
    scale = float(np.dot(y * w, s_arr * w) / np.dot(s_arr * w, s_arr * w))
    return Correction(scale=scale, per_block_ms=0.0, fitted_on=tuple(rows))


def _fit_terms(terms: list[np.ndarray], counts: np.ndarray, y: np.ndarray, w: np.ndarray,
               bound: float) -> tuple[list[float], float] | None:
    """Relative least squares of y on the block-sum `terms` plus a per-block term; the per-block
    term is clamped to +-bound (then the sums are refitted with it fixed). None when a sum's
    coefficient comes out non-positive."""
    x = np.column_stack(terms + [counts])
    sol, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    coefs, per_block = [float(v) for v in sol[:-1]], float(sol[-1])
    if abs(per_block) > bound:
        per_block = math.copysign(bound, per_block)
        xs = np.column_stack(terms)
        sol, *_ = np.linalg.lstsq(xs * w[:, None], (y - per_block * counts) * w, rcond=None)
        coefs = [float(v) for v in sol]
    if min(coefs) <= 0:
        return None
    return coefs, per_block


def _per_block_bound(predictor: Predictor) -> float:
    """Median of the 5 cheapest measured blocks: the most a per-block term may be worth."""
    cheapest = sorted(e.median_ms for e in predictor.table.entries.values())[:5]
    return float(np.median(cheapest)) if cheapest else 0.0
