"""Optional FAISS search (``pip install frozen-head[faiss]``) for corpora past a few million documents.

The default ``"Flat"`` index is exact (same results as ``exact_search``, FAISS's BLAS kernels); any other
``index_factory`` string (e.g. ``"IVF4096,Flat"``, ``"HNSW32"``) trades exactness for speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from modeling.evaluation.search import check_score, prepare


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def require_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "FAISS is not installed; install it with `pip install 'frozen-head[faiss]'` (faiss-cpu)."
        ) from None
    return faiss


def build_index(
    documents: Any, score: str = "cosine", index_factory: str = "Flat", doc_chunk: int = 262144, nprobe: int = 32
) -> Any:
    """A FAISS index over ``documents``, added block by block (a memory-mapped corpus is read one block at a time)."""
    faiss = require_faiss()
    check_score(score)
    metric = faiss.METRIC_L2 if score == "euclidean" else faiss.METRIC_INNER_PRODUCT
    dimension = np.asarray(documents[:1]).shape[1]
    index = faiss.index_factory(dimension, index_factory, metric)
    if not index.is_trained:
        sample = prepare(documents[: max(doc_chunk, 40 * 4096)], score).numpy()
        index.train(np.ascontiguousarray(sample))
    for start in range(0, len(documents), doc_chunk):
        index.add(np.ascontiguousarray(prepare(documents[start : start + doc_chunk], score).numpy()))
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    return index


def search_index(index: Any, queries: Any, k: int, score: str = "cosine") -> tuple[Tensor, Tensor]:
    """Top ``k`` per query from an index built by ``build_index``; same outputs as ``exact_search``."""
    scores, indices = index.search(np.ascontiguousarray(prepare(queries, score).numpy()), min(k, index.ntotal))
    scores = torch.from_numpy(scores)
    if score == "euclidean":
        scores = -scores.clamp_min(0).sqrt()  # FAISS returns squared L2; match exact_search's -distance
    return scores, torch.from_numpy(indices).long()


def faiss_search(
    queries: Any,
    documents: Any,
    k: int,
    score: str = "cosine",
    index_factory: str = "Flat",
    doc_chunk: int = 262144,
    nprobe: int = 32,
) -> tuple[Tensor, Tensor]:
    """Top ``k`` documents per query from a FAISS index built block by block; same outputs as ``exact_search``."""
    return search_index(build_index(documents, score, index_factory, doc_chunk, nprobe), queries, k, score)
