"""Honest retrieval evaluation: trec_eval metrics, exact chunked search, BM25 and hybrid baselines, slices, plots.

One job per module: ``metric_names`` (the one list of metrics), ``metrics`` (pytrec_eval), ``search`` (exact
top-k), ``faiss_search`` (optional), ``bm25`` (bm25s), ``fusion`` (hybrid), ``significance`` (paired test),
``slices`` (seen/unseen), ``pair_scores`` + ``plots`` (pictures), ``systems`` (models and cache), ``pipeline``
(a run, as stages), ``results_schema`` (its results), ``formatting`` + ``report`` (numbers and the terminal table).
"""

from modeling.evaluation.metrics import METRICS, mean_metrics, per_query_metrics
from modeling.evaluation.search import exact_search

__all__ = ["METRICS", "exact_search", "mean_metrics", "per_query_metrics"]
