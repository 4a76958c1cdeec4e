"""Evaluation and hard-negative mining over a corpus of millions, read from the embedding cache a block at a time.

    python benchmarks/evaluate_scale.py --docs 1000000

Writes ``--docs`` synthetic 384-d document rows (shards of 10,000) and ``--queries`` query rows straight into a
temporary embedding cache of a tiny random BERT of that width (``tests/tiny_encoder.py``; nothing is encoded),
each query a noisy copy of one document (its synthetic qrels). Then, in this process:
1. the evaluation pipeline's dense stages (``embed_corpus``: the corpus as a ``CachedMatrix`` view; ``embed_queries``;
   ``score_queries``: exact chunked search, runs and trec_eval metrics) with ``--depth`` hits per query;
2. hard-negative mining (``base_pools`` over ``cache_embedder``: one (query, positive) pair per query, pools of 20);
3. the same dense stages through FAISS (``--search faiss``, index ``Flat``, built block by block), when installed.
The peak RSS of 1-2 is taken before 3 starts (a ``Flat`` index holds the corpus itself: its own peak is printed
apart). ``--in-memory`` reads the whole corpus into one tensor first, as evaluation and mining did before the view.
Last line: ``peak_rss_gb=X corpus_gb=Y`` (X: peak RSS of stages 1-2, Y: the corpus's float32 embeddings).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import sentence_transformers  # noqa: F401  (the import an evaluation pays, counted in the peak)
import torch

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.cache.keys import text_keys
from modeling.data.ir_data import IRData
from modeling.evaluation import pipeline
from modeling.evaluation.faiss_search import faiss_available
from modeling.evaluation.metrics import MAIN_METRIC, mean_metrics
from modeling.training.negatives import HardNegatives, base_pools, cache_embedder
from tests.tiny_encoder import tiny_encoder

SHARD_ROWS = 10_000
GB = 1024**3


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def fill(
    cache: EmbeddingCache, docs: int, queries: int, dim: int, noise: float, seed: int
) -> dict[str, dict[str, int]]:
    """Synthetic rows into the cache shard by shard (never all in memory); returns the qrels."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, docs, queries)
    query_rows = np.empty((queries, dim), dtype=np.float32)
    for start in range(0, docs, SHARD_ROWS):
        count = min(SHARD_ROWS, docs - start)
        rows = rng.standard_normal((count, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        cache.store.append(text_keys([f"d{i}" for i in range(start, start + count)]), rows)
        here = np.nonzero((targets >= start) & (targets < start + count))[0]
        query_rows[here] = rows[targets[here] - start] + noise * rng.standard_normal((len(here), dim), dtype=np.float32)
    cache.store.append(text_keys([f"q{i}" for i in range(queries)]), query_rows)
    cache.refresh()
    return {f"q{i}": {f"d{int(target)}": 1} for i, target in enumerate(targets)}


def dense_stages(prepared: pipeline.Prepared, cache: EmbeddingCache, in_memory: bool) -> tuple[float, float]:
    """(mean nDCG@10, seconds) of the pipeline's dense search + metrics on ``prepared``."""
    started = time.perf_counter()
    dense, _ = pipeline.embed_corpus(prepared, cache)
    if in_memory:  # the pre-view behaviour: one tensor of the whole corpus per system
        for system in dense.values():
            system.documents = system.documents[0 : len(system.documents)]
    pipeline.embed_queries(prepared, dense)
    per_query = pipeline.score_queries(prepared, "bare_encoder", dense, None, None)
    return mean_metrics(per_query["bare_encoder"])[MAIN_METRIC], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--doc-chunk", type=int, default=16384)
    parser.add_argument("--noise", type=float, default=0.2, help="query = its document's row + noise * N(0, 1)")
    parser.add_argument("--no-faiss", action="store_true", help="skip stage 3 even when FAISS is installed")
    parser.add_argument("--in-memory", action="store_true", help="hold each corpus as one tensor (the old way)")
    parser.add_argument("--dir", default=None, help="folder for the temporary cache (default: the system's temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    after_import = rss_gb()
    corpus_gb = args.docs * args.dim * 4 / GB
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        model = tiny_encoder(Path(folder) / "tiny-bert", hidden=args.dim)
        cache = EmbeddingCache(prefix_model(model), root=Path(folder) / "cache", show_progress_bar=False)
        started = time.perf_counter()
        qrels = fill(cache, args.docs, args.queries, args.dim, args.noise, seed=0)
        write_s = time.perf_counter() - started
        corpus = {text: text for text in (f"d{i}" for i in range(args.docs))}  # id = text: one string a document
        queries = {qid: qid for qid in qrels}
        data = IRData("synthetic", corpus, queries, qrels)
        config = pipeline.EvaluationConfig(
            data=folder, cache_dir=str(Path(folder) / "cache"), depth=args.depth, doc_chunk=args.doc_chunk,
            progress=False,
        )  # fmt: skip
        prepared = pipeline.Prepared(config, data, None, None, None, None, None, "rrf", model, "cosine")
        print(f"docs={args.docs} queries={args.queries} dim={args.dim} write_s={write_s:.1f} "
              f"rss_after_import_gb={after_import:.2f} corpus_gb={corpus_gb:.2f}", flush=True)  # fmt: skip

        ndcg, seconds = dense_stages(prepared, cache, args.in_memory)
        print(f"exact search + metrics: nDCG@10={ndcg:.4f} {seconds:.1f} s peak_rss_gb={rss_gb():.2f}", flush=True)

        started = time.perf_counter()
        pairs = [(qid, next(iter(docs))) for qid, docs in qrels.items()]  # texts are the ids here
        embed = cache_embedder(cache, chunk_rows=args.doc_chunk)
        if args.in_memory:
            whole = embed  # the pre-view behaviour: the corpus as one tensor

            def embed(texts, task):
                rows = whole(texts, task)
                return rows[0 : len(rows)] if task == "document" else rows

        pools = base_pools(pairs, list(corpus), embed, HardNegatives(pool=20))
        full = sum(1 for pool in pools.values() if len(pool) == 20)
        print(f"mining: {len(pools)} pools, {full} of 20 documents "
              f"{time.perf_counter() - started:.1f} s peak_rss_gb={rss_gb():.2f}", flush=True)  # fmt: skip
        bounded_peak = rss_gb()

        if faiss_available() and not args.no_faiss:
            config.search = "faiss"
            ndcg_faiss, seconds = dense_stages(prepared, cache, args.in_memory)
            print(f"faiss Flat search + metrics: nDCG@10={ndcg_faiss:.4f} (exact: {ndcg:.4f}) {seconds:.1f} s "
                  f"peak_rss_gb={rss_gb():.2f} (the index holds the corpus)", flush=True)  # fmt: skip
    print(f"peak_rss_gb={bounded_peak:.2f} corpus_gb={corpus_gb:.2f}")


if __name__ == "__main__":
    main()
