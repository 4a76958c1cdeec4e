"""Model selection's dev side: the dev retrieval evaluator, its metrics, and the collapse guard's probe pairs.

A dev metric is added here (the evaluator's ``*_at_k`` lists); ``dev_metrics`` returns every metric the evaluator
computes under its short name (``ndcg@10``, ``mrr@10``, ...), and ``DEV_METRIC`` is the one selection maximises.
"""

from __future__ import annotations

import random

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

DEV_NAME = "dev"
SELECTION_METRIC = "ndcg@10"
DEV_METRIC = f"eval_{DEV_NAME}_cosine_{SELECTION_METRIC}"  # the key the trainer logs and selects the epoch by


def dev_evaluator(queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]]):
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        name=DEV_NAME,
        batch_size=512,
        show_progress_bar=False,
        write_csv=False,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10, 100],
        map_at_k=[100],
    )


def dev_metrics(evaluator, model) -> dict[str, float]:
    """The evaluator's cosine metrics under their short names (``ndcg@10``, ``recall@100``, ...)."""
    scores = evaluator(model)
    prefix = f"{evaluator.name}_cosine_"
    return {key[len(prefix) :]: float(value) for key, value in scores.items() if key.startswith(prefix)}


def probe_pairs(
    queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]], size: int = 64, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Positive and random-negative (query, document) pairs from the dev split, for the collapse guard."""
    rng = random.Random(seed)
    ids = sorted(queries)
    rng.shuffle(ids)
    doc_ids = sorted(corpus)
    positives, negatives = [], []
    for qid in ids[:size]:
        relevant_docs = sorted(relevant.get(qid, ()))
        if not relevant_docs:
            continue
        positives.append((queries[qid], corpus[rng.choice(relevant_docs)]))
        negative = rng.choice(doc_ids)
        while negative in relevant[qid] and len(relevant[qid]) < len(doc_ids):
            negative = rng.choice(doc_ids)
        negatives.append((queries[qid], corpus[negative]))
    return positives, negatives
