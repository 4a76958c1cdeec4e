"""Hybrid retrieval: BM25 fused with a dense run.

Two standard fusions (Bruch et al. 2023, "An Analysis of Fusion Functions for Hybrid Retrieval"): a convex
combination of per-query min-max normalised scores, whose weight needs labelled queries to choose (a dev split),
and reciprocal rank fusion (Cormack et al. 2009, k=60), which needs none. A few lines each; no maintained
library offers both on plain dicts, so they are written here.
"""

from __future__ import annotations

from modeling.evaluation.metrics import MAIN_METRIC, Qrels, Run, mean_metrics, per_query_metrics, trec_order

WEIGHT_GRID = [round(0.1 * step, 1) for step in range(11)]


def min_max(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return {doc: 1.0 for doc in scores}
    return {doc: (score - low) / (high - low) for doc, score in scores.items()}


def convex(dense: Run, sparse: Run, weight: float, depth: int = 1000) -> Run:
    """``weight * dense + (1 - weight) * sparse`` on min-max scores; a document absent from one run gets 0 there."""
    fused: Run = {}
    for qid in dense.keys() | sparse.keys():
        a, b = min_max(dense.get(qid, {})), min_max(sparse.get(qid, {}))
        scores = {doc: weight * a.get(doc, 0.0) + (1 - weight) * b.get(doc, 0.0) for doc in a.keys() | b.keys()}
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
    dense: Run, sparse: Run, qrels: Qrels, grid: list[float] = WEIGHT_GRID
) -> tuple[float, dict[float, float]]:
    """The dense weight with the best mean nDCG@10 on ``qrels`` (a dev split), and every weight's score.

    Ties go to the weight closest to 0.5 (an even mix), so a flat curve does not pick an extreme by accident.
    """
    curve = {
        weight: mean_metrics(per_query_metrics(qrels, convex(dense, sparse, weight, depth=100)))[MAIN_METRIC]
        for weight in grid
    }
    best = max(curve, key=lambda weight: (round(curve[weight], 10), -abs(weight - 0.5)))
    return best, curve
