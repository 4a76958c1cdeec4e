"""Retrieval metrics exactly as trec_eval computes them (the BEIR / MTEB convention), through pytrec_eval.

Graded relevance counts as gain in nDCG (trec_eval's linear gains); Recall, MAP and MRR treat grade >= 1 as
relevant. Every query judged in the qrels gets a value, 0 when the run retrieved nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytrec_eval

from modeling.evaluation.metric_names import MAIN_METRIC, METRICS, TREC_MEASURES

__all__ = ["MAIN_METRIC", "METRICS", "Qrels", "Run", "mean_metrics", "per_query_metrics", "trec_order", "truncate"]

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}
Qrels = dict[str, dict[str, int]]  # query id -> {doc id: grade}


def trec_order(scores: dict[str, float]) -> list[str]:
    """Doc ids in trec_eval's ranking order: score descending, ties broken by doc id descending."""
    return sorted(scores, key=lambda doc: (scores[doc], doc), reverse=True)


def truncate(run: Run, depth: int) -> Run:
    """The top ``depth`` of every ranking, in trec_eval's order (so ties at the cut go the same way)."""
    return {qid: {doc: scores[doc] for doc in trec_order(scores)[:depth]} for qid, scores in run.items()}


def per_query_metrics(qrels: Qrels, run: Run) -> dict[str, dict[str, float]]:
    """query id -> {metric: value} for every query in ``qrels``."""
    run = {qid: {doc: float(score) for doc, score in run.get(qid, {}).items()} for qid in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10,100", "recall.10,100,1000", "map_cut.100"})
    scored = evaluator.evaluate(run)
    # trec_eval's recip_rank has no cutoff, so MRR@10 is recip_rank on the run truncated to its top 10.
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncate(run, 10))
    values: dict[str, dict[str, float]] = {}
    for qid in qrels:
        row = scored.get(qid, {})
        values[qid] = {name: float(row.get(key, 0.0)) for name, key in TREC_MEASURES.items()}
        values[qid]["MRR@10"] = float(reciprocal.get(qid, {}).get("recip_rank", 0.0))
        values[qid] = {name: values[qid][name] for name in METRICS}
    return values


def mean_metrics(per_query: dict[str, dict[str, float]], qids: Iterable[str] | None = None) -> dict[str, float | None]:
    """Mean of each metric over ``qids`` (all queries by default); ``None`` for an empty set."""
    qids = list(per_query if qids is None else qids)
    if not qids:
        return {name: None for name in METRICS}
    return {name: sum(per_query[qid][name] for qid in qids) / len(qids) for name in METRICS}
