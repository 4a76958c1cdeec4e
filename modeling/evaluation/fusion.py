"""Hybrid retrieval: BM25 fused with a dense run.

Two standard fusions (Bruch et al. 2023, "An Analysis of Fusion Functions for Hybrid Retrieval"): a convex
combination of per-query normalised scores (min-max or z-score), whose weight and normalisation need labelled
queries to choose (a dev split), and reciprocal rank fusion (Cormack et al. 2009, k=60), which needs none. A few
lines each; no maintained library offers both on plain dicts, so they are written here.

Normalisation statistics come from each run's top ``STATS_DEPTH`` documents, whatever the run's depth, so a weight
chosen on depth-100 dev runs means the same on evaluate.py's depth-1000 runs. A document absent from one run gets
that run's lowest normalised score (as low as its last retrieved document).
"""

from __future__ import annotations

import statistics

from modeling.evaluation.metrics import MAIN_METRIC, Qrels, Run, mean_metrics, per_query_metrics, trec_order

WEIGHT_GRID = [round(0.1 * step, 1) for step in range(11)]
NORMALISATIONS = ("min-max", "z-score")
STATS_DEPTH = 100  # a run's normalisation statistics come from its top this many documents


def _top_scores(scores: dict[str, float], depth: int) -> list[float]:
    return sorted(scores.values(), reverse=True)[:depth]


def min_max(scores: dict[str, float], stats_depth: int = STATS_DEPTH) -> dict[str, float]:
    """(score - low) / (high - low), low and high over the top ``stats_depth`` scores (the top one maps to 1)."""
    if not scores:
        return {}
    top = _top_scores(scores, stats_depth)
    low, high = top[-1], top[0]
    if high == low:
        return {doc: 1.0 if score >= high else 0.0 for doc, score in scores.items()}
    return {doc: (score - low) / (high - low) for doc, score in scores.items()}


def z_score(scores: dict[str, float], stats_depth: int = STATS_DEPTH) -> dict[str, float]:
    """(score - mean) / standard deviation, both over the top ``stats_depth`` scores."""
    if not scores:
        return {}
    top = _top_scores(scores, stats_depth)
    mean = statistics.fmean(top)
    spread = statistics.pstdev(top) if len(top) > 1 else 0.0
    if spread == 0:
        return {doc: score - mean for doc, score in scores.items()}
    return {doc: (score - mean) / spread for doc, score in scores.items()}


NORMALISERS = {"min-max": min_max, "z-score": z_score}


def check_normalisation(normalisation: str) -> str:
    if normalisation not in NORMALISERS:
        raise ValueError(f"Unknown score normalisation {normalisation!r}; use one of {', '.join(NORMALISATIONS)}.")
    return normalisation


def convex(dense: Run, sparse: Run, weight: float, depth: int = 1000, normalisation: str = "min-max") -> Run:
    """``weight * dense + (1 - weight) * sparse`` on normalised scores; a document absent from one run gets that
    run's lowest normalised score."""
    normalise = NORMALISERS[check_normalisation(normalisation)]
    fused: Run = {}
    for qid in dense.keys() | sparse.keys():
        a, b = normalise(dense.get(qid, {})), normalise(sparse.get(qid, {}))
        floor_a, floor_b = min(a.values(), default=0.0), min(b.values(), default=0.0)
        scores = {doc: weight * a.get(doc, floor_a) + (1 - weight) * b.get(doc, floor_b) for doc in a.keys() | b.keys()}
        fused[qid] = {doc: scores[doc] for doc in trec_order(scores)[:depth]}
    return fused


def rrf(runs: list[Run], k: int = 60, depth: int = 1000) -> Run:
    """Reciprocal rank fusion: sum over runs of ``1 / (k + rank)``, ranks in trec_eval's order, from 1."""
    fused: Run = {}
    for qid in set().union(*(run.keys() for run in runs)):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, doc in enumerate(trec_order(run.get(qid, {})), 1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
        fused[qid] = {doc: scores[doc] for doc in trec_order(scores)[:depth]}
    return fused


def choose_weight(
    dense: Run, sparse: Run, qrels: Qrels, grid: list[float] = WEIGHT_GRID, normalisation: str = "min-max"
) -> tuple[float, dict[float, float]]:
    """The dense weight with the best mean nDCG@10 on ``qrels`` (a dev split), and every weight's score.

    Ties go to the weight closest to 0.5 (an even mix), so a flat curve does not pick an extreme by accident.
    """
    curve = {
        weight: mean_metrics(per_query_metrics(qrels, convex(dense, sparse, weight, 100, normalisation)))[MAIN_METRIC]
        for weight in grid
    }
    best = max(curve, key=lambda weight: (round(curve[weight], 10), -abs(weight - 0.5)))
    return best, curve


def best_normalisation(best_scores: dict[str, float]) -> str:
    """The normalisation whose best weight scores higher on dev; ties go to the earlier one in ``NORMALISATIONS``
    (min-max, the older default)."""
    return max(best_scores, key=lambda how: (round(best_scores[how], 10), -NORMALISATIONS.index(how)))


def choose_fusion(
    dense: Run, sparse: Run, qrels: Qrels, grid: list[float] = WEIGHT_GRID, normalisation: str | None = None
) -> tuple[str, float, dict[str, dict[float, float]]]:
    """(normalisation, weight) with the best mean nDCG@10 on ``qrels``, and each normalisation's curve; a given
    ``normalisation`` is kept and only its weight chosen."""
    chosen = {how: choose_weight(dense, sparse, qrels, grid, how) for how in NORMALISATIONS}
    how = normalisation or best_normalisation({how: curve[weight] for how, (weight, curve) in chosen.items()})
    return how, chosen[how][0], {how: curve for how, (_, curve) in chosen.items()}
