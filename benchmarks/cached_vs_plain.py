"""Cached training vs the plain trainer with the frozen encoder inside the model, in one run.

    python benchmarks/cached_vs_plain.py --data ../shared/data/scifact

Same head, seed, schedule, sampler and batches; the only difference is where the frozen embeddings come from:
- cached: ``[CachedEmbeddingInput, head, Normalize]`` (this project; the cache is filled before timing starts,
  as a second run of train.py finds it);
- plain: ``[Transformer, Pooling, head, Normalize]``, the encoder run every step and at every evaluation, its
  dropout pinned off;
- plain, dropout on: the same, but the encoder's modules follow ``model.train()`` as they do by default.
Reports wall time ratios and dev nDCG@10 after 1, 3 and 10 epochs (per-epoch evaluation, best epoch kept).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from modeling.model.build import build_model, find_head, load_encoder  # noqa: E402
from modeling.cache.cached_input import cached_twin, prefix_model  # noqa: E402
from modeling.cache.embedding_cache import EmbeddingCache  # noqa: E402
from modeling.data.ir_data import load_ir_data  # noqa: E402
from modeling.data.training_data import TrainingData  # noqa: E402
from modeling.training.dataset import ranking_dataset  # noqa: E402
from modeling.training.dev import dev_evaluator  # noqa: E402
from modeling.training.settings import TrainSettings, Trial  # noqa: E402
from modeling.training.trial import head_state, run_trial  # noqa: E402


def subset(folder: str, train_queries: int, dev_queries: int, corpus_size: int, seed: int) -> TrainingData:
    split = load_ir_data(folder, "train")
    rng = random.Random(seed)
    qids = sorted(q for q, docs in split.relevant.items() if docs)
    rng.shuffle(qids)
    chosen, dev = qids[:train_queries], qids[train_queries : train_queries + dev_queries]
    pairs = {split.queries[q]: [split.corpus[d] for d in sorted(split.relevant[q])] for q in chosen}
    needed = {d for q in dev for d in split.relevant[q]}
    others = [d for d in sorted(split.corpus) if d not in needed]
    corpus_ids = sorted(needed | set(rng.sample(others, corpus_size - len(needed))))
    return TrainingData(
        name="scifact-subset",
        pairs=pairs,
        dev_queries={q: split.queries[q] for q in dev},
        dev_corpus={d: split.corpus[d] for d in corpus_ids},
        dev_relevant={q: split.relevant[q] for q in dev},
        corpus=[split.corpus[d] for d in corpus_ids],
    )


def unpin_dropout(model) -> None:
    """Undo the eval pin: the encoder follows model.train() again, as a plain frozen encoder does."""
    for module in model[0].modules():
        module.__dict__.pop("train", None)


def run(mode: str, data: TrainingData, epochs: int, config: dict, workdir: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(load_encoder(), placement="query")
    head = find_head(model)
    cache = EmbeddingCache(prefix_model(model), show_progress_bar=False)
    queries, documents = data.all_texts()
    cache.ensure(queries + documents)  # filled before the clock starts (a second run finds it filled)
    if mode == "cached":
        trained = cached_twin(model, cache)
    else:
        trained = model
        if mode == "plain-dropout-on":
            unpin_dropout(model)
    evaluator = dev_evaluator(data.dev_queries, data.dev_corpus, data.dev_relevant)
    started = time.perf_counter()
    settings = TrainSettings(epochs=epochs, batch_size=config["batch_size"], placement="query", show_progress=False)
    result = run_trial(
        trained, head, ranking_dataset(data), evaluator, ([], []), settings, Trial(config["learning_rate"], 0.0),
        workdir / f"{mode}-{epochs}", use_guard=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "best_dev": result.best_dev, "history": result.dev_history, "state": head_state(head)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--train-queries", type=int, default=160)
    parser.add_argument("--dev-queries", type=int, default=50)
    parser.add_argument("--corpus-size", type=int, default=400)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--modes", nargs="+", default=["cached", "plain", "plain-dropout-on"])
    parser.add_argument("--output", default="runs/bench/cached_vs_plain")
    args = parser.parse_args()
    data = subset(args.data, args.train_queries, args.dev_queries, args.corpus_size, seed=0)
    config = {"learning_rate": 1e-3, "batch_size": 32}
    rows = []
    for epochs in args.epochs:
        results = {
            mode: run(mode, data, epochs, config, Path(args.output))
            for mode in args.modes
            if not (mode == "plain-dropout-on" and epochs != max(args.epochs))
        }
        cached = results["cached"]
        for mode, result in results.items():
            drift = max((result["state"][k] - cached["state"][k]).abs().max().item() for k in cached["state"])
            rows.append({"epochs": epochs, "mode": mode, "seconds": round(result["seconds"], 2),
                         "time_vs_cached": round(result["seconds"] / cached["seconds"], 2),
                         "dev_ndcg@10": round(result["best_dev"], 4),
                         "delta_vs_cached": round(result["best_dev"] - cached["best_dev"], 4),
                         "max_head_weight_diff": drift})  # fmt: skip
            print(rows[-1], flush=True)
    print(
        "\n| epochs | mode | seconds | x cached | dev nDCG@10 | - cached | max head weight diff |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['epochs']} | {r['mode']} | {r['seconds']} | {r['time_vs_cached']} | {r['dev_ndcg@10']} | {r['delta_vs_cached']:+.4f} | {r['max_head_weight_diff']:.2e} |"
        )
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
