"""The one list of retrieval metrics: display name, trec_eval measure, short column name.

Adding a metric means one row here; ``metrics.py`` computes them, ``report.py`` and the card print them. Every
other spelling (``ndcg@10`` from the training evaluator or older results files) is mapped back by ``canonical``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # display name and JSON key, e.g. "nDCG@10"
    trec: str | None  # pytrec_eval output key; None for MRR@10 (recip_rank on the run cut at 10)
    short: str  # terminal column header


METRIC_TABLE = (
    Metric("nDCG@10", "ndcg_cut_10", "nDCG@10"),
    Metric("nDCG@100", "ndcg_cut_100", "nDCG@100"),
    Metric("MRR@10", None, "MRR@10"),
    Metric("Recall@10", "recall_10", "R@10"),
    Metric("Recall@100", "recall_100", "R@100"),
    Metric("Recall@1000", "recall_1000", "R@1000"),
    Metric("MAP@100", "map_cut_100", "MAP@100"),
)
METRICS = [metric.name for metric in METRIC_TABLE]
MAIN_METRIC = "nDCG@10"
TREC_MEASURES = {metric.name: metric.trec for metric in METRIC_TABLE if metric.trec}
SHORT = {metric.name: metric.short for metric in METRIC_TABLE}
_BY_LOWER = {name.lower(): name for name in METRICS}


def canonical(name: str) -> str:
    """The display name of ``name`` in any case (``ndcg@10`` -> ``nDCG@10``); unknown names come back unchanged."""
    return _BY_LOWER.get(str(name).lower(), name)
