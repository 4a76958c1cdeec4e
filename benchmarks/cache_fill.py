"""Docs/s of the cache fill against the library's plain ``encode`` on the same texts, in one run.

    python benchmarks/cache_fill.py --limit 512            # CPU here: the fill's own overhead (target <= 5 %)
    python benchmarks/cache_fill.py                        # on a GPU: all 5,183 SciFact abstracts

Texts: the BEIR corpus in ``--data`` (title + abstract, as training and evaluation embed them), first ``--limit``.
Runs, in this order, each on a cold cache folder: ``encode`` (the library's defaults but our batch size,
fp32), then ``EmbeddingCache.ensure`` (chunked fill, shards written, fp16 autocast + larger batches + two
chunks in flight on CUDA). Reports docs/s of both, the fill's overhead over ``encode`` (CPU: same precision
and batch, so this is the cost of sorting, chunking and writing shards) and the largest difference between the
fill's rows and ``encode``'s. ``--ndcg`` also scores bare-encoder nDCG@10 on the test split from both sets of
rows (needs the whole corpus: no ``--limit``), the <= 0.001 check for fp16 on a GPU.
Runs unchanged on CPU or CUDA (``--device``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import load_beir_folder
from modeling.model.build import load_encoder


def ndcg_at_10(data, doc_ids, doc_rows, query_rows) -> float:
    from modeling.evaluation.metrics import mean_metrics, per_query_metrics

    qids = list(data.qrels)
    d = torch.nn.functional.normalize(torch.as_tensor(doc_rows, dtype=torch.float32), dim=-1)
    q = torch.nn.functional.normalize(torch.as_tensor(query_rows, dtype=torch.float32), dim=-1)
    top = (q @ d.T).topk(100, dim=1)
    run = {qid: {doc_ids[j]: float(s) for s, j in zip(top.values[i], top.indices[i])} for i, qid in enumerate(qids)}
    return mean_metrics(per_query_metrics(data.qrels, run))["nDCG@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--encoder", default=None, help="encoder path or id (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 512 on CUDA")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp16", "fp32"])
    parser.add_argument("--ndcg", action="store_true", help="also score nDCG@10 on the test split from both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = load_beir_folder(args.data, "test")
    doc_ids = list(data.corpus)[: args.limit]
    texts = [data.corpus[d] for d in doc_ids]
    encoder = load_encoder(args.encoder)
    encoder.to(args.device)
    prefix = prefix_model(encoder)
    prefix.to(args.device)
    batch = args.batch_size or (512 if args.device.startswith("cuda") else 64)
    prefix.encode(texts[:batch], batch_size=batch, show_progress_bar=False)  # warm-up (kernels, allocator)

    def synchronize() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        plain = prefix.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
    synchronize()
    plain_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(prefix, root=folder, batch_size=batch, precision=args.precision, show_progress_bar=False)
        started = time.perf_counter()
        cache.ensure(texts)
        synchronize()
        fill_s = time.perf_counter() - started
        filled = cache.get(texts).numpy()
        if args.ndcg:
            queries = [data.queries[q] for q in data.qrels]
            plain_q = prefix.encode(queries, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
            print(f"nDCG@10 test: encode fp32 {ndcg_at_10(data, doc_ids, plain, plain_q):.5f}, "
                  f"fill ({cache.precision}) {ndcg_at_10(data, doc_ids, filled, cache.get(queries).numpy()):.5f}")  # fmt: skip
    diff = float(np.abs(filled - plain).max())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"device={device} texts={len(texts)} batch={batch} fill_precision={cache.precision} max_abs_diff={diff:.2e}")
    print(f"encode_docs_per_s={len(texts) / plain_s:.1f} fill_docs_per_s={len(texts) / fill_s:.1f} "
          f"fill_overhead_pct={100 * (fill_s - plain_s) / plain_s:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
