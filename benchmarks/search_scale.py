"""Scale check of exact dense search: 1,000,000 random 384-d documents, 1,000 queries, top 1000.

Measures wall time and peak RSS of ``exact_search`` and checks its results against a brute-force reference (full
score rows, one ``topk``) on a sample of queries. ``--storage memory`` holds the corpus as one float32 tensor (what
``evaluate.py`` does); ``--storage disk`` writes it to a ``.npy`` file and streams it block by block (``NpyMatrix``).
Peak RSS is per process, so run each storage in its own process, niced on a shared machine:

    nice python benchmarks/search_scale.py --storage memory
    nice python benchmarks/search_scale.py --storage disk
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling.evaluation.npy_matrix import NpyMatrix, write_npy_blocks
from modeling.evaluation.search import exact_search, prepare


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def unit_blocks(count: int, dim: int, seed: int, chunk: int = 8192) -> Iterator[torch.Tensor]:
    """Seeded random unit vectors, one small block at a time."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, count, chunk):
        yield F.normalize(torch.randn(min(chunk, count - start), dim, generator=generator), dim=-1)


def in_memory(count: int, dim: int, seed: int) -> torch.Tensor:
    out = torch.empty(count, dim)
    start = 0
    for block in unit_blocks(count, dim, seed):
        out[start : start + len(block)] = block
        start += len(block)
    return out


def brute_force(queries: torch.Tensor, documents, k: int, chunk: int = 65536) -> torch.return_types.topk:
    """Full score rows (queries x every document), then a single topk: the reference the running merge must match."""
    rows = torch.cat(
        [queries @ prepare(documents[s : s + chunk], "dot").T for s in range(0, len(documents), chunk)], dim=1
    )
    return rows.topk(k, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000, help="Number of random document vectors.")
    parser.add_argument("--queries", type=int, default=1000, help="Number of random query vectors.")
    parser.add_argument("--dim", type=int, default=384, help="Vector width (all-MiniLM-L6-v2: 384).")
    parser.add_argument("--k", type=int, default=1000, help="Hits per query (the evaluation's depth).")
    parser.add_argument("--doc-chunk", type=int, default=16384, help="Documents per block.")
    parser.add_argument("--query-chunk", type=int, default=512, help="Queries per block.")
    parser.add_argument("--sample", type=int, default=20, help="Queries checked against the brute-force reference.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    parser.add_argument(
        "--storage",
        choices=("memory", "disk"),
        default="memory",
        help="Corpus as one tensor, or a .npy file read by blocks.",
    )
    parser.add_argument(
        "--workdir", help="Folder for the --storage disk file (default: a temporary folder, removed after)."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rss_start = peak_rss_mb()
    clock = time.perf_counter()
    temporary = tempfile.TemporaryDirectory(dir=args.workdir)
    if args.storage == "memory":
        documents = in_memory(args.documents, args.dim, seed=1)
    else:
        path = Path(temporary.name) / "documents.npy"
        documents = NpyMatrix(
            write_npy_blocks(path, unit_blocks(args.documents, args.dim, seed=1), args.documents, args.dim)
        )
    queries = in_memory(args.queries, args.dim, seed=2)
    generation_s, rss_after_data = time.perf_counter() - clock, peak_rss_mb()

    clock = time.perf_counter()
    scores, indices = exact_search(queries, documents, args.k, "dot", args.query_chunk, args.doc_chunk)
    search_s, rss_after_search = time.perf_counter() - clock, peak_rss_mb()

    sample = torch.randperm(args.queries, generator=torch.Generator().manual_seed(3))[: args.sample]
    reference = brute_force(queries[sample], documents, args.k)
    temporary.cleanup()
    same_set = [
        set(indices[q].tolist()) == set(reference.indices[row].tolist()) for row, q in enumerate(sample.tolist())
    ]
    same_order = (indices[sample] == reference.indices).float().mean().item()
    report = {
        "documents": args.documents,
        "queries": args.queries,
        "dim": args.dim,
        "k": args.k,
        "doc_chunk": args.doc_chunk,
        "query_chunk": args.query_chunk,
        "torch_threads": torch.get_num_threads(),
        "storage": args.storage,
        "corpus_mb": round(args.documents * args.dim * 4 / 2**20),
        "generation_s": round(generation_s, 2),
        "search_s": round(search_s, 2),
        "queries_per_s": round(args.queries / search_s, 1),
        "peak_rss_mb_after_imports": round(rss_start),
        "peak_rss_mb_after_data": round(rss_after_data),
        "peak_rss_mb": round(rss_after_search),
        "sample_queries": len(sample),
        "sample_same_topk_set": f"{sum(same_set)}/{len(same_set)}",
        "sample_same_rank_fraction": same_order,
        "sample_max_abs_score_diff": (scores[sample] - reference.values).abs().max().item(),
        # rank swaps are allowed only between (near-)tied scores: float sums differ in the last bits between shapes
        "sample_rank_swaps_beyond_1e-6": int(
            ((indices[sample] != reference.indices) & ((scores[sample] - reference.values).abs() > 1e-6)).sum()
        ),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
