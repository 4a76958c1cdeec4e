"""Similarity of relevant vs sampled non-relevant (query, document) pairs: the numbers behind the score plot.

A collapsed head gives every pair the same cosine; the two distributions then become one spike. Their means,
spreads and gap are stored in the results too, so collapse shows in the JSON, not only in the picture.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from modeling.evaluation.search import prepare, score_block


def pair_scores(
    query_embeddings: Tensor,
    doc_embeddings: Tensor,
    query_ids: list[str],
    doc_index: dict[str, int],
    qrels: dict[str, dict[str, int]],
    score: str = "cosine",
    negatives_per_query: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores of relevant pairs, scores of random non-relevant pairs); the same seed draws the same pairs."""
    rng = np.random.default_rng(seed)
    relevant, non_relevant = [], []
    with torch.inference_mode():
        for row, qid in enumerate(query_ids):
            positives = {doc_index[doc] for doc, grade in qrels.get(qid, {}).items() if grade > 0}
            sampled = rng.choice(len(doc_index), size=min(negatives_per_query, len(doc_index)), replace=False)
            negatives = [int(i) for i in sampled if int(i) not in positives]
            query = prepare(query_embeddings[row : row + 1], score)
            for indices, out in ((sorted(positives), relevant), (negatives, non_relevant)):
                if indices:
                    out.extend(score_block(query, prepare(doc_embeddings[indices], score), score)[0].tolist())
    return np.asarray(relevant), np.asarray(non_relevant)


def summarise(relevant: np.ndarray, non_relevant: np.ndarray) -> dict[str, float | int]:
    """Means, spreads and the gap between the two distributions (the collapse check in numbers)."""
    spread = float(np.concatenate([relevant, non_relevant]).std()) if relevant.size + non_relevant.size else 0.0
    return {
        "relevant_pairs": int(relevant.size),
        "relevant_mean": float(relevant.mean()) if relevant.size else None,
        "relevant_std": float(relevant.std()) if relevant.size else None,
        "non_relevant_pairs": int(non_relevant.size),
        "non_relevant_mean": float(non_relevant.mean()) if non_relevant.size else None,
        "non_relevant_std": float(non_relevant.std()) if non_relevant.size else None,
        "gap": float(relevant.mean() - non_relevant.mean()) if relevant.size and non_relevant.size else None,
        "overall_std": spread,
    }
