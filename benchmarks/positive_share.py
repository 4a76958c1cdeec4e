"""How much a trained model prefers documents that were training positives, on test queries whose relevant
documents were none (the "unseen" slice) and on the others.

    python benchmarks/positive_share.py MODEL DATA [--split test] [--train-split train]

For the bare encoder under the model and the model itself: the share of training positives in each query's top 10
and at rank 1, per slice. A head that learned "was a training positive" along with relevance raises these on
unseen queries (on SciFact the default head: 0.087 -> 0.167 of the top 10). Embeddings come from the cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from modeling.cache.cached_input import prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.ir_data import load_ir_data, load_qrels
from modeling.evaluation.systems import DenseEncoder, bare_encoder, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--split", default="test")
    parser.add_argument("--train-split", default="train")
    args = parser.parse_args()
    data = load_ir_data(args.data, args.split)
    positives = {
        doc for judged in load_qrels(args.data, args.train_split).values() for doc, g in judged.items() if g > 0
    }
    model = load_model(args.model, trust_remote_code=True)
    base = bare_encoder(model)
    doc_ids = list(data.corpus)
    is_positive = torch.tensor([doc in positives for doc in doc_ids])
    slices = {"seen": [], "unseen": []}
    for qid, judged in data.qrels.items():
        slices["seen" if any(g > 0 and d in positives for d, g in judged.items()) else "unseen"].append(qid)
    cache = EmbeddingCache(prefix_model(model), show_progress_bar=False)
    unit = torch.nn.functional.normalize
    for name, encoder in (("bare_encoder", DenseEncoder(base, cache)), ("trained", DenseEncoder(model, cache))):
        documents = unit(encoder.encode(list(data.corpus.values()), "document"), dim=-1)
        for slice_name, ids in slices.items():
            if not ids:
                continue
            queries = unit(encoder.encode([data.queries[q] for q in ids], "query"), dim=-1)
            top = (queries @ documents.T).topk(10).indices
            print(
                f"{name:13s} {slice_name:6s} ({len(ids)} queries): training positives in the top 10 "
                f"{is_positive[top].float().mean():.3f}, at rank 1 {is_positive[top[:, 0]].float().mean():.3f}"
            )
    print(f"training positives in the corpus: {is_positive.float().mean():.3f}")


if __name__ == "__main__":
    main()
