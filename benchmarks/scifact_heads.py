"""SciFact benchmark of head variants: test nDCG@10 for all queries, seen and unseen documents.

    python benchmarks/scifact_heads.py --data ../shared/data/scifact [--variants default symmetric ...]

Each variant is trained with ``train.py``'s own job (learning rate and epoch picked on a dev split carved from
the train queries; the test qrels are read only here, for scoring). "seen": test queries whose relevant
abstract is a train positive; "unseen": the rest. Embeddings come from the shared cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402

from model_card import TrainingCard  # noqa: E402
from modeling.model.build import load_encoder  # noqa: E402
from modeling.cache.cached_input import cached_twin, prefix_model  # noqa: E402
from modeling.cache.embedding_cache import EmbeddingCache  # noqa: E402
from modeling.evaluation.slices import seen_unseen  # noqa: E402
from modeling.data.ir_data import load_ir_data  # noqa: E402
from modeling.data.training_data import load_training_data  # noqa: E402
from modeling.training.run import TrainSettings, train  # noqa: E402

VARIANTS = {
    "default": {},
    "wd0": {"weight_decays": (0.0,)},
    "wd0.1": {"weight_decays": (0.1,)},
    "wd1": {"weight_decays": (1.0,)},
    "wd10": {"weight_decays": (10.0,)},
    "lr-up-to-1e-2": {"learning_rates": (1e-3, 3e-3, 1e-2)},
    "scale50": {"scale": 50.0},
    "no-refit": {"refit": False},
    "no-interpolation": {"interpolate": False},
    "symmetric": {"placement": "symmetric"},
    "mlp": {"kind": "mlp"},
    "hardneg3": {"hard_negatives": 3, "negatives_per_pair": 3, "negative_margin": None},
    "no-hard-negatives": {"hard_negatives": 0},
    "symmetric-wd1": {"placement": "symmetric", "weight_decays": (1.0,)},
    "lr1e-5": {"learning_rates": (1e-5,)},
    "reduced128-step0": {"placement": "symmetric", "out_features": 128, "learning_rates": (1e-3,), "epochs": 1},
}


def score(model: SentenceTransformer, test, groups, cache_root=None) -> dict[str, float]:
    twin = cached_twin(model, EmbeddingCache(prefix_model(model), root=cache_root, show_progress_bar=False))
    out = {}
    for name, qids in groups.items():
        evaluator = InformationRetrievalEvaluator(
            {q: test.queries[q] for q in qids}, test.corpus, {q: test.relevant[q] for q in qids},
            name=name, batch_size=512, write_csv=False, ndcg_at_k=[10], mrr_at_k=[10], accuracy_at_k=[1],
            precision_recall_at_k=[10], map_at_k=[100],
        )  # fmt: skip
        out[name] = evaluator(twin)[f"{name}_cosine_ndcg@10"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--output", default="runs/bench/scifact")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()

    data = load_training_data(args.data)
    test = load_ir_data(args.data, "test")
    train_split = load_ir_data(args.data, "train")
    groups = seen_unseen(test.qrels, train_split.qrels)
    print({k: len(v) for k, v in groups.items()})
    rows = {"zero-shot": score(load_encoder(), test, groups)}
    print("zero-shot", rows["zero-shot"], flush=True)
    for name in args.variants:
        options = {"epochs": args.epochs, **VARIANTS[name]}
        settings = TrainSettings(output_dir=Path(args.output) / name, show_progress=False, **options)
        started = time.time()
        summary = train(data, settings, model_card_data=TrainingCard.card_data(), fill_card=TrainingCard.fill)
        model = SentenceTransformer(str(settings.output_dir), trust_remote_code=True)
        rows[name] = {**score(model, test, groups), "dev": summary.trained_dev["ndcg@10"],
                      "lr": summary.chosen_learning_rate, "epoch": summary.chosen_epoch, "seconds": time.time() - started}  # fmt: skip
        print(name, rows[name], flush=True)
    print("\n| variant | all | seen | unseen | dev | lr | epoch |\n|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['all']:.4f} | {row['seen']:.4f} | {row['unseen']:.4f} | {row.get('dev', float('nan')):.4f} | {row.get('lr')} | {row.get('epoch')} |"
        )
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
