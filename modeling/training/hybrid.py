"""The hybrid's fusion weight, chosen on the training run's dev split and saved with the model as ``hybrid.json``.

Why in training: convex fusion of min-max normalised scores (``modeling.evaluation.fusion.convex``) beats
reciprocal rank fusion, but its dense weight needs labelled queries, and test data rarely has a dev split; the
training run has one. Equal weights are not safe everywhere: where BM25 is much stronger than the dense model
(product search), an even mix falls below BM25 alone, so the weight may end near 0 (or 1).

The rule: the even mix (0.5) unless dev shows a better weight beyond noise. Every weight whose dev nDCG@10 is
within one standard error (of the per-query difference to the best weight) of the best is a candidate, and the
candidate closest to 0.5 is kept. The score normalisation (min-max or z-score, ``fusion.NORMALISATIONS``) is
chosen first: the one whose best weight scores higher on dev (``fusion.best_normalisation``). On SciFact's carved
dev split z-score led at every weight from 0.1 to 0.8 (best 0.8338 against min-max's 0.8244). BM25 is
``modeling.evaluation.bm25`` with its default settings, the one ``evaluate.py`` scores.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling.cache.cached_matrix import CachedMatrix, document_side
from modeling.evaluation.bm25 import BM25, BM25Settings
from modeling.evaluation.fusion import NORMALISATIONS, WEIGHT_GRID, best_normalisation, convex
from modeling.evaluation.metrics import MAIN_METRIC, Qrels, Run, per_query_metrics
from modeling.evaluation.search import exact_search, to_run
from modeling.evaluation.systems import resolve_prompt

logger = logging.getLogger(__name__)

HYBRID_FILE = "hybrid.json"
DEPTH = 100  # nDCG@10 needs the top 10 of the fused list; 100 per run leaves room for the other run's documents
PREFERRED_WEIGHT = 0.5


@dataclass
class HybridChoice:
    """The chosen dense weight and the evidence for it."""

    dense_weight: float
    dev_ndcg: float
    source: str
    best_weight: float
    standard_error: float
    bm25: dict = field(default_factory=dict)
    normalisation: str = "min-max"
    curves: dict[str, dict[float, float]] = field(default_factory=dict)  # dev nDCG@10 by weight, per normalisation
    # per-query dev nDCG@10 by normalisation and weight: what ``pool_hybrid`` joins over carves (not saved)
    scores: dict[str, dict[float, list[float]]] = field(default_factory=dict, repr=False)

    @property
    def num_queries(self) -> int:
        """How many dev queries the per-query ``scores`` hold."""
        return len(next(iter(self.scores[self.normalisation].values())))

    @property
    def curve(self) -> dict[float, float]:
        """The chosen normalisation's dev curve."""
        return self.curves.get(self.normalisation, {})

    def to_json(self) -> dict:
        return {
            "dense_weight": self.dense_weight,
            "normalisation": self.normalisation,
            "source": self.source,
            "dev_ndcg@10": self.dev_ndcg,
            "dev_best_weight": self.best_weight,
            "dev_standard_error": self.standard_error,
            "dev_ndcg@10_by_weight": {f"{w:g}": v for w, v in self.curve.items()},
            "dev_ndcg@10_by_normalisation": {
                how: {f"{w:g}": v for w, v in curve.items()} for how, curve in self.curves.items()
            },
            "bm25": self.bm25,
        }


def paired_standard_error(a: list[float], b: list[float]) -> float:
    """Standard error of the mean per-query difference ``a - b`` (0 for fewer than two queries)."""
    if len(a) < 2:
        return 0.0
    return statistics.stdev(x - y for x, y in zip(a, b)) / math.sqrt(len(a))


def choose_weight(per_query: dict[float, list[float]], prefer: float = PREFERRED_WEIGHT) -> tuple[float, float, float]:
    """(chosen weight, best weight, standard error at the chosen one) from per-query dev scores of each weight.

    Every list holds the same queries in the same order. A weight is as good as the best unless its mean is lower
    by more than the standard error of its per-query difference to the best; of those, the one nearest ``prefer``.
    """
    if not per_query or any(len(v) != len(next(iter(per_query.values()))) for v in per_query.values()):
        raise ValueError("choose_weight needs the same queries scored for every weight.")
    means = {w: statistics.fmean(v) for w, v in per_query.items()}
    best = max(means, key=lambda w: (round(means[w], 12), -abs(w - prefer)))
    errors = {w: paired_standard_error(per_query[best], per_query[w]) for w in per_query}
    within = [w for w in per_query if means[best] - means[w] <= errors[w] + 1e-12]
    chosen = min(within, key=lambda w: (abs(w - prefer), -means[w]))
    return chosen, best, errors[chosen]


def dense_run(twin, queries: dict[str, str], corpus: dict[str, str], depth: int = DEPTH) -> Run:
    """The model's top ``depth`` (cosine) for each query: queries through the head, documents as the model embeds
    them (the cached twin: no encoder call), read from the cache a block at a time."""
    with torch.inference_mode():
        query_embeddings = twin.encode_query(list(queries.values()), convert_to_tensor=True, show_progress_bar=False)
    documents = CachedMatrix(
        twin[0].cache, list(corpus.values()), resolve_prompt(twin, "document", None), document_side(twin)
    )
    scores, indices = exact_search(query_embeddings.float().cpu(), documents, depth, doc_chunk=documents.chunk_rows)
    return to_run(list(queries), list(corpus), scores, indices)


def choose_hybrid(
    twin,
    queries: dict[str, str],
    corpus: dict[str, str],
    relevant: dict[str, set[str]],
    source: str,
    grid: list[float] = WEIGHT_GRID,
    bm25: BM25Settings | None = None,
) -> HybridChoice:
    """Choose the convex normalisation and dense weight of ``twin`` + BM25 on a dev task (query ids -> relevant doc
    ids)."""
    bm25 = bm25 or BM25Settings()
    qrels: Qrels = {qid: {doc: 1 for doc in docs} for qid, docs in relevant.items() if docs and qid in queries}
    if not qrels:
        raise ValueError("The dev split has no judged query: the hybrid's weight cannot be chosen.")
    dev_queries = {qid: queries[qid] for qid in qrels}
    dense = dense_run(twin, dev_queries, corpus)
    sparse = BM25(corpus, bm25).search(dev_queries, DEPTH)
    scores: dict[str, dict[float, list[float]]] = {}
    for how in NORMALISATIONS:
        scores[how] = {}
        for weight in grid:
            scored = per_query_metrics(qrels, convex(dense, sparse, weight, DEPTH, how))
            scores[how][weight] = [scored[qid][MAIN_METRIC] for qid in qrels]
    return decide(scores, source, bm25.describe())


def decide(scores: dict[str, dict[float, list[float]]], source: str, bm25: dict) -> HybridChoice:
    """The normalisation whose best weight scores highest on dev, then its weight by ``choose_weight``, from
    per-query dev nDCG@10 by normalisation and weight."""
    options = {}
    for how, per_query in scores.items():
        chosen, best, error = choose_weight(per_query)
        curve = {w: statistics.fmean(v) for w, v in per_query.items()}
        options[how] = (chosen, best, error, curve)
        logger.info(
            "hybrid dev nDCG@10 by dense weight (%s): %s; best %g, would choose %g (one standard error %.4f)",
            how, ", ".join(f"{w:g}: {v:.4f}" for w, v in curve.items()), best, chosen, error,
        )  # fmt: skip
    how = best_normalisation({h: curve[best] for h, (_, best, _, curve) in options.items()})
    chosen, best, error, curve = options[how]
    curves = {h: option[3] for h, option in options.items()}
    return HybridChoice(chosen, curve[chosen], source, best, error, bm25, how, curves, scores)


def pool_hybrid(choices: list[HybridChoice], source: str) -> HybridChoice:
    """One choice from the dev queries of several carves together (each carve's queries scored by the head chosen
    on that carve): the same rule over all of them, so the weight rests on K times the queries."""
    scores = {
        how: {w: [s for choice in choices for s in choice.scores[how][w]] for w in choices[0].scores[how]}
        for how in choices[0].scores
    }
    return decide(scores, source, choices[0].bm25)


def save_hybrid(choice: HybridChoice | dict, folder: str | Path) -> Path:
    path = Path(folder) / HYBRID_FILE
    path.write_text(json.dumps(choice.to_json() if isinstance(choice, HybridChoice) else choice, indent=2) + "\n")
    return path


def load_hybrid(folder: str | Path) -> dict | None:
    """The saved choice (``dense_weight``, ``source``, ...) or None when the model has none."""
    path = Path(folder) / HYBRID_FILE
    if not path.is_file():
        return None
    choice = json.loads(path.read_text())
    weight = choice.get("dense_weight")
    if not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(f"{path}: dense_weight must be a number in [0, 1], got {weight!r}.")
    if choice.get("normalisation", "min-max") not in NORMALISATIONS:
        raise ValueError(f"{path}: normalisation must be one of {', '.join(NORMALISATIONS)}, "
                         f"got {choice.get('normalisation')!r}.")  # fmt: skip
    return choice
