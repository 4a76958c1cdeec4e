"""Honest retrieval evaluation: trec_eval metrics, exact chunked search, BM25 and hybrid baselines, slices, plots.

One job per module: ``metrics`` (pytrec_eval), ``search`` (exact top-k), ``faiss_search`` (optional),
``bm25`` (bm25s), ``fusion`` (hybrid), ``significance`` (paired test), ``slices`` (seen/unseen),
``pair_scores`` + ``plots`` (pictures), ``dense`` (models and cache), ``pipeline`` (a run), ``report`` (output).
"""

from modeling.evaluation.metrics import METRICS, mean_metrics, per_query_metrics
from modeling.evaluation.search import exact_search

__all__ = ["METRICS", "exact_search", "mean_metrics", "per_query_metrics"]
