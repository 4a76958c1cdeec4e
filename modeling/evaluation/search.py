"""Exact top-k dense search in chunks: never a full query x corpus score matrix in memory.

torch has no chunked top-k over a corpus (``sentence_transformers.util.semantic_search`` keeps every hit as a
Python dict, which does not scale to 1,000 queries x k=1000 x millions of documents), so this is a small loop:
score one block of documents against one block of queries, keep a running top-k per query.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SCORES = ("cosine", "dot", "euclidean")


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"Unsupported similarity {score!r}; dense search supports {SCORES}.")
    return score


def prepare(block: Any, score: str) -> Tensor:
    """A float32 tensor of a block (a tensor, an array or a memory-mapped array slice), normalised for cosine."""
    if isinstance(block, np.ndarray) and not block.flags.writeable:
        block = np.array(block, dtype=np.float32)  # a read-only memmap slice: copy this block only
    block = torch.as_tensor(block).float()
    return F.normalize(block, dim=-1) if score == "cosine" else block


def score_block(queries: Tensor, documents: Tensor, score: str) -> Tensor:
    """Higher is better for every score kind (euclidean distances are negated)."""
    if score == "euclidean":
        return -torch.cdist(queries, documents)
    return queries @ documents.T


def exact_search(
    queries: Any,
    documents: Any,
    k: int,
    score: str = "cosine",
    query_chunk: int = 512,
    doc_chunk: int = 16384,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """The exact top ``k`` documents of every query.

    Args:
        queries: ``(Q, d)`` query embeddings.
        documents: ``(D, d)`` document embeddings: a tensor, a numpy array or a ``np.memmap`` (read one block at a time).
        k: Hits per query (capped at ``D``).
        score: ``cosine``, ``dot`` or ``euclidean`` (the model's ``similarity_fn_name``).
        query_chunk, doc_chunk: Block sizes; working memory grows with ``query_chunk * doc_chunk`` (scores plus topk buffers: about 0.1 GB at the defaults).

    Returns:
        ``(scores, indices)``, both ``(Q, min(k, D))``, best first.
    """
    check_score(score)
    if k < 1 or query_chunk < 1 or doc_chunk < 1:
        raise ValueError("k, query_chunk and doc_chunk must be positive.")
    queries = prepare(queries, score)
    total = len(documents)
    k = min(k, total)
    best_scores = torch.full((len(queries), 0), float("-inf"))
    best_indices = torch.zeros((len(queries), 0), dtype=torch.long)
    starts = range(0, total, doc_chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Dense search", unit="block")
    with torch.inference_mode():
        for start in starts:  # documents outside: each block is read (and normalised) once
            block = prepare(documents[start : start + doc_chunk], score)
            merged_scores, merged_indices = [], []
            for q_start in range(0, len(queries), query_chunk):
                scores = score_block(queries[q_start : q_start + query_chunk], block, score)
                top = scores.topk(min(k, scores.shape[1]), dim=1)
                candidates = torch.cat([best_scores[q_start : q_start + query_chunk], top.values], dim=1)
                indices = torch.cat([best_indices[q_start : q_start + query_chunk], top.indices + start], dim=1)
                keep = candidates.topk(min(k, candidates.shape[1]), dim=1)
                merged_scores.append(keep.values)
                merged_indices.append(indices.gather(1, keep.indices))
            best_scores, best_indices = torch.cat(merged_scores), torch.cat(merged_indices)
    return best_scores, best_indices


def to_run(query_ids: list[str], doc_ids: list[str], scores: Tensor, indices: Tensor) -> dict[str, dict[str, float]]:
    """Top-k tensors as a trec-style run: query id -> {doc id: score}."""
    return {
        qid: {doc_ids[index]: score for index, score in zip(row_indices.tolist(), row_scores.tolist())}
        for qid, row_scores, row_indices in zip(query_ids, scores, indices)
    }
