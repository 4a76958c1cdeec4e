"""SciFact study of reduced models (issue 13): each design x output dimension, test nDCG@10 all / seen / unseen.

    python benchmarks/reduced_study.py --data /path/to/scifact --designs distill fixed-documents --dims 64 128 192

Each run is ``train.py``'s own job (``--placement DESIGN --out-dim DIM``; selection on the dev split carved from the
train queries, with the by-document veto); the test qrels are read only here, to score. Results are appended to
``OUTPUT/results.jsonl`` as each run ends, and ``--table`` prints the table of every result there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentence_transformers import SentenceTransformer  # noqa: E402

from benchmarks.scifact_heads import score  # noqa: E402
from model_card import TrainingCard  # noqa: E402
from modeling.data.ir_data import load_ir_data  # noqa: E402
from modeling.data.training_data import load_training_data  # noqa: E402
from modeling.evaluation.slices import seen_unseen  # noqa: E402
from modeling.model.build import load_encoder  # noqa: E402
from modeling.training.run import TrainSettings, train  # noqa: E402

# design -> settings (besides out_features); "symmetric-pull" is design (c): decay of the change toward the start.
DESIGNS = {
    "fixed-documents": {"placement": "fixed-documents"},
    "two-maps": {"placement": "two-maps"},
    "symmetric": {"placement": "symmetric"},
    "symmetric-pull": {"placement": "symmetric", "weight_decays": (1.0, 10.0)},
    "distill": {"placement": "distill"},  # the default: training queries + pseudo-queries (first sentences)
    "distill-train-queries": {"placement": "distill", "pseudo_queries": 0},  # the default before: training queries only
    "distill-queries": {"placement": "distill-queries"},
    "distill-mlp": {"placement": "distill", "kind": "mlp"},  # MLP query maps (teacher and student); documents linear
    "distill-cosine-mse": {"placement": "distill", "loss": "cosine-mse"},
    "symmetric-cosine-mse": {"placement": "symmetric", "loss": "cosine-mse"},
}


def table(rows: list[dict]) -> str:
    lines = [
        "| design | dim | all | seen | unseen | dev | dev by-document | vetoed | training s | bytes/doc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['design']} | {row['dim']} | {row['all']:.4f} | {row['seen']:.4f} | {row['unseen']:.4f} | "
            f"{row['dev']:.4f} | {row['dev_unseen'] if row['dev_unseen'] is None else format(row['dev_unseen'], '.4f')} "
            f"| {row['vetoes']} | {row['seconds']:.0f} | {4 * row['dim']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--dims", nargs="+", type=int, default=[128])
    parser.add_argument("--output", default="runs/bench/reduced")
    parser.add_argument("--table", action="store_true", help="only print the table of the results so far")
    args = parser.parse_args()
    results = Path(args.output) / "results.jsonl"
    if args.table:
        print(table([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))
        return
    results.parent.mkdir(parents=True, exist_ok=True)
    data = load_training_data(args.data)
    test = load_ir_data(args.data, "test")
    groups = seen_unseen(test.qrels, load_ir_data(args.data, "train").qrels)
    print("bare encoder", score(load_encoder(), test, groups), flush=True)
    for dim in args.dims:
        for design in args.designs:
            settings = TrainSettings(
                output_dir=Path(args.output) / f"{design}-{dim}", out_features=dim, show_progress=False,
                **DESIGNS[design],
            )  # fmt: skip
            started = time.time()
            summary = train(data, settings, model_card_data=TrainingCard.card_data(), fill_card=TrainingCard.fill)
            seconds = time.time() - started
            model = SentenceTransformer(str(settings.output_dir), trust_remote_code=True)
            row = {
                "design": design, "dim": dim, **score(model, test, groups), "dev": summary.trained_dev["ndcg@10"],
                "dev_unseen": summary.trained_dev_unseen, "vetoes": len(summary.vetoes), "veto_list": summary.vetoes,
                "seconds": seconds, "full_width_dev": summary.full_width_dev.get("ndcg@10"),
                "start_dev": summary.start_dev.get("ndcg@10"), "base_dev_unseen": summary.base_dev_unseen,
                "distill_epochs": summary.distill_epochs, "lr": summary.chosen_learning_rate,
                "interpolation": summary.interpolation,
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
