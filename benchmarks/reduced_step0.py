"""Step-0 quality of reduced-dimension heads (no training): PCA vs random orthonormal initialisation.

    python benchmarks/reduced_step0.py --data ../shared/data/scifact --dims 64 128 192

PCA is fitted on the corpus embeddings only (no queries, no judgments). Scored on the test split, nDCG@10.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402

from modeling.model.build import build_model, load_encoder  # noqa: E402
from modeling.cache.cached_input import cached_twin, prefix_model  # noqa: E402
from modeling.cache.embedding_cache import EmbeddingCache  # noqa: E402
from modeling.data.ir_data import load_ir_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128, 192])
    args = parser.parse_args()
    test = load_ir_data(args.data, args.split)
    encoder = load_encoder()
    cache = EmbeddingCache(prefix_model(encoder), show_progress_bar=False)
    corpus_embeddings = cache.get(list(test.corpus.values()))
    evaluator = InformationRetrievalEvaluator(
        test.queries, test.corpus, test.relevant, name="test", batch_size=512, write_csv=False, ndcg_at_k=[10]
    )
    rows = [("full 384 (bare encoder)", evaluator(cached_twin(encoder, cache))["test_cosine_ndcg@10"])]
    for dim in args.dims:
        for init in ("pca", "random"):
            pca = corpus_embeddings if init == "pca" else None
            model = build_model(encoder, placement="symmetric", out_features=dim, pca_embeddings=pca)
            rows.append((f"{dim} {init}", evaluator(cached_twin(model, cache))["test_cosine_ndcg@10"]))
            print(rows[-1], flush=True)
    print(f"\n| head at step 0 | {args.split} nDCG@10 |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.4f} |")


if __name__ == "__main__":
    main()
