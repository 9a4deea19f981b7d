"""Measured feedback for the search: time the winner, rescale its deployment, search again.

A latency table prices every architecture through one fitted correction, and the family a
tight budget pushes the search into can sit further off it than the table's held-out error
says. On the 2-core dev host (2026-11-23) the ExecuTorch int8 table priced a filterbank
student at 17.6 ms that ran 30.9 ms, so the search shipped ExecuTorch int8 where ONNX Runtime
int8 was faster. When the winner can be timed (the device is this machine), the search
measures it; when the measurement misses the prediction by more than `tolerance`, that
deployment's predictions are multiplied by measured / predicted and the search runs again with
the same seed. Other deployments keep their tables' figures until one of their winners is
measured.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .search import Deployment, SearchResult

# Measure = winner's result -> (measured median ms, whatever the caller keeps for that round).
Measure = Callable[[SearchResult], tuple[float, Any]]


@dataclass(frozen=True)
class Round:
    """One search round and the measurement of its winner."""

    index: int
    summary: str
    deploy: str
    predicted_ms: float  # with this round's factor for the deployment
    measured_ms: float
    factor: float  # the deployment's rescaling during this round (1.0: the table as profiled)
    budget_ms: float

    @property
    def ratio(self) -> float:
        return self.measured_ms / self.predicted_ms

    def within(self, tolerance: float) -> bool:
        return abs(self.ratio - 1.0) <= tolerance

    def to_dict(self) -> dict:
        return {"round": self.index, "arch": self.summary, "deploy": self.deploy,
                "predicted_ms": round(self.predicted_ms, 4), "measured_ms": round(self.measured_ms, 4),
                "measured_over_predicted": round(self.ratio, 4), "factor": round(self.factor, 4),
                "measured_share_of_budget": round(self.measured_ms / self.budget_ms, 4)}


def rescaled(dep: Deployment, factor: float) -> Deployment:
    """`dep` with every prediction multiplied by `factor` (the correction is linear in it)."""
    if factor == 1.0:
        return dep
    corr = dep.table.correction
    corr = dataclasses.replace(corr, scale=corr.scale * factor, per_block_ms=corr.per_block_ms * factor)
    return dataclasses.replace(dep, table=dataclasses.replace(dep.table, correction=corr),
                               measured_factor=dep.measured_factor * factor)


@dataclass
class FeedbackResult:
    result: SearchResult  # the chosen round's search
    kept: Any  # what `measure` returned for the chosen round
    rounds: list[Round]  # the measured rounds
    chosen: int  # index into rounds; -1 when the last search found nothing under the budget
    tolerance: float

    @property
    def converged(self) -> bool:
        return self.chosen >= 0 and self.rounds[self.chosen].within(self.tolerance)

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "chosen_round": self.chosen, "converged": self.converged,
                "rounds": [r.to_dict() for r in self.rounds]}


MAX_DEFAULT_ROUNDS = 6


def default_rounds(deployments: Sequence[Deployment]) -> int:
    """Enough searches to rescale every deployment once and confirm the last winner, at most
    MAX_DEFAULT_ROUNDS: with four tables that each under-price the students a tight budget
    wants, three searches rescaled three deployments and never got to a confirmed winner."""
    return min(len(deployments) + 1, MAX_DEFAULT_ROUNDS)


def search_with_feedback(search: Callable[[Sequence[Deployment]], SearchResult], deployments: Sequence[Deployment],
                         measure: Measure, rounds: int | None = None, tolerance: float = 0.10) -> FeedbackResult:
    """Run `search` up to `rounds` times (default_rounds when None), measuring each winner.
    When a search finds nothing under the budget and no winner measured so far ran within it
    (+ `tolerance`), that search's result comes back (best None, chosen -1) for the caller.

    The chosen round is the first whose winner ran within `tolerance` of its prediction; when
    none did, the best-quality winner that ran within the budget plus `tolerance`, else the
    last round. What `measure` kept for the other rounds is the caller's to clean up.
    """
    rounds = default_rounds(deployments) if rounds is None else rounds
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: expected at least 1")
    factors = [1.0] * len(deployments)
    done: list[tuple[Round, SearchResult, Any]] = []
    for k in range(rounds):
        result = search([rescaled(d, f) for d, f in zip(deployments, factors)])
        best = result.best
        if best is None:
            if any(_fits(r, tolerance) for r, _, _ in done):
                break  # rescaled, nothing fits: an earlier winner that ran within the budget stands
            # Nothing fits (at once, or once measurements rescaled a deployment) and nothing
            # measured so far ran within the budget: that is the answer.
            return FeedbackResult(result, None, [d[0] for d in done], -1, tolerance)
        ms, kept = measure(result)
        i = best.deployment
        r = Round(k, best.summary(), result.deployments[i].label, best.predicted_ms, ms, factors[i],
                  result.limits.max_ms)
        done.append((r, result, kept))
        if r.within(tolerance):
            break
        factors[i] *= r.ratio
    chosen = _choose(done, tolerance)
    r, result, kept = done[chosen]
    return FeedbackResult(result, kept, [d[0] for d in done], chosen, tolerance)


def _fits(r: Round, tolerance: float) -> bool:
    return r.measured_ms <= r.budget_ms * (1 + tolerance)


def _choose(done: list[tuple[Round, SearchResult, Any]], tolerance: float) -> int:
    last = len(done) - 1
    if done[last][0].within(tolerance):
        return last
    ok = [j for j, (r, _, _) in enumerate(done) if _fits(r, tolerance)]
    if not ok:
        return last

    def cost(j: int) -> float:
        res = done[j][1]
        return res.objective.cost(res.best.quality)

    return min(ok, key=cost)
