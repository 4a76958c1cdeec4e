"""Quality study: training variants x carves of the dev split, scored on a test split read only to score.

    nice -n 10 python benchmarks/quality_study.py --data ../shared/data/scifact --variants default --carves 0 1 2 3 4

Each (variant, carve) is the user's own command, ``python train.py --data D --output-dir X --seed S --quiet`` plus
the variant's flags (``--seed`` seeds the carve of the dev split and the training), so what is measured is what a
user runs. The model is then scored on the test split: nDCG@10 over all queries and the seen/unseen slices
(modeling.evaluation.slices), with trec_eval's metric through the project's own search and metrics; when the model
folder holds ``hybrid.json`` (the fusion weight and normalisation training chose on its dev split), the convex hybrid
of the model and BM25 with them is scored too, as ``evaluate.py`` does (before this round: min-max at the saved
weight whatever the saved normalisation; ``--rescore`` scores saved models again). Nothing here chooses anything: the test split never feeds back.

``--dev-only SEED...`` chooses without a test split at all: for each outer seed the training queries are carved
the way ``train.py`` carves its dev split, the outer dev queries become the ``test`` qrels of a BEIR folder written
under OUTPUT (corpus and queries linked, train qrels the rest), and each variant trains on that folder (carving its
own inner dev) and is scored on the outer dev queries. The real test split is never opened; this is how variants
are compared on dev with more queries than one carve holds (81 on SciFact), by-document (unseen) half included.

Results accumulate in ``OUTPUT/results.json`` (a rerun skips the runs already there) and ``OUTPUT/results.md``
(every run, then mean +- sample standard deviation over carves per variant).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Flags added to the default command; an empty list is the default itself. Phase-specific variants are added here.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "negatives-off": ["--hard-negatives", "0"],
    "static-top3": ["--hard-negatives", "3", "--negatives-per-pair", "3", "--negative-margin", "none"],
    "pool20-no-guard": ["--negative-margin", "none"],  # the default since the study
    "pool20-margin0": ["--negative-margin", "0"],
    "pool20-margin0.05": ["--negative-margin", "0.05"],
    "pool50-margin0": ["--hard-negatives", "50"],
    "pool20-2-per-pair": ["--negatives-per-pair", "2"],
    "pool20-gist0": ["--negative-guard", "gist", "--negative-margin", "0"],
    "carves3": ["--selection-carves", "3"],
    "average3": ["--average-carves", "3", "--anchor-weight", "0"],
    "average5": ["--average-carves", "5", "--anchor-weight", "0"],
    "single": ["--average-carves", "1", "--anchor-weight", "0"],
    "anchored": ["--average-carves", "5", "--anchor-weight", "1"],  # the default after the anchor study
    "anchored2": ["--average-carves", "5", "--anchor-weight", "2"],  # the default since the anchor-weight study
    "anchored4": ["--average-carves", "5", "--anchor-weight", "4"],
    "out128-single": ["--out-dim", "128", "--average-carves", "1"],
    "out128-average5": ["--out-dim", "128", "--average-carves", "5"],
    "out128-teacher-scored": ["--out-dim", "128", "--pseudo-scorer", "teacher"],
    "out128-anchored-teacher": ["--out-dim", "128", "--anchor-weight", "1"],
    "out128-distill-queries": ["--out-dim", "128", "--placement", "distill-queries"],
    "out128-pseudo1": ["--out-dim", "128", "--pseudo-weight", "1"],
    "out128-pseudo6": ["--out-dim", "128", "--pseudo-weight", "6"],
    "cmse128-anchored-teacher": ["--out-dim", "128", "--loss", "cosine-mse", "--anchor-weight", "1"],
    "cmse128": ["--out-dim", "128", "--loss", "cosine-mse"],
    "cmse128-teacher-scored": ["--out-dim", "128", "--loss", "cosine-mse", "--pseudo-scorer", "teacher"],
    "average8": ["--average-carves", "8"],  # the default with 8 runs in the mean instead of 5
    "sent3": ["--pseudo-sentences", "3"],  # the anchor's pseudo-queries: the first and 2 more sentences per document
    "sentall": ["--pseudo-sentences", "1000"],  # every sentence (up to --pseudo-queries)
    "out128-sent3": ["--out-dim", "128", "--pseudo-sentences", "3"],
    "out128-sentall": ["--out-dim", "128", "--pseudo-sentences", "1000"],
    "cmse128-sent3": ["--out-dim", "128", "--loss", "cosine-mse", "--pseudo-sentences", "3"],
    "negatives-off-carves3": ["--hard-negatives", "0", "--selection-carves", "3"],
}
SLICE_NAMES = ("all", "seen", "unseen")


def train_command(data: str, output_dir: Path, seed: int, flags: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--data", data, "--output-dir", str(output_dir),
            "--seed", str(seed), "--quiet", *flags]  # fmt: skip


def chosen_settings(summary: dict) -> dict:
    """What selection chose, from training_summary.json (fields looked up by name, missing ones skipped)."""
    keys = ("chosen_learning_rate", "chosen_weight_decay", "chosen_epoch", "interpolation", "kept_identity",
            "chosen_hard_negatives", "chosen", "selection")  # fmt: skip
    return {key: summary[key] for key in keys if key in summary}


class Scorer:
    """Test-split scoring shared by every run: the corpus, BM25 run and slices are built once."""

    def __init__(self, data: str, split: str = "test", depth: int = 1000) -> None:
        from modeling.data.ir_data import load_ir_data
        from modeling.evaluation.bm25 import BM25
        from modeling.evaluation.slices import seen_unseen

        self.test = load_ir_data(data, split)
        self.depth = depth
        self.slices = seen_unseen(self.test.qrels, load_ir_data(data, "train").qrels)
        self.bm25 = BM25(self.test.corpus).search(self.test.queries, depth)

    def dense_run(self, model) -> dict:
        from modeling.cache.cached_input import prefix_model
        from modeling.cache.embedding_cache import EmbeddingCache
        from modeling.evaluation.search import exact_search, to_run
        from modeling.evaluation.systems import DenseEncoder

        encoder = DenseEncoder(model, EmbeddingCache(prefix_model(model), show_progress_bar=False))
        docs = encoder.encode(list(self.test.corpus.values()), "document")
        queries = encoder.encode(list(self.test.queries.values()), "query")
        return to_run(list(self.test.queries), list(self.test.corpus), *exact_search(queries, docs, self.depth))

    def slices_of(self, run: dict) -> dict[str, float]:
        from modeling.evaluation.metrics import MAIN_METRIC, mean_metrics, per_query_metrics

        per_query = per_query_metrics(self.test.qrels, run)
        return {name: mean_metrics(per_query, qids)[MAIN_METRIC] for name, qids in self.slices.items()}

    def score(self, model_dir: Path | None) -> dict:
        from modeling.evaluation.fusion import convex
        from modeling.evaluation.systems import load_model

        model = load_model(None if model_dir is None else str(model_dir), trust_remote_code=True)
        dense = self.dense_run(model)
        row = {"test": self.slices_of(dense)}
        hybrid_file = None if model_dir is None else model_dir / "hybrid.json"
        if hybrid_file is not None and hybrid_file.is_file():
            saved = json.loads(hybrid_file.read_text())
            weight, normalisation = saved["dense_weight"], saved.get("normalisation", "min-max")
            row["hybrid_weight"], row["hybrid_normalisation"] = weight, normalisation
            row["hybrid"] = self.slices_of(convex(dense, self.bm25, weight, self.depth, normalisation))
        return row


def run_one(data: str, output: Path, variant: str, seed: int, scorer: Scorer) -> dict:
    model_dir = output / variant / f"seed-{seed}"
    log_file = output / variant / f"seed-{seed}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log_file.open("w") as log:
        done = subprocess.run(
            train_command(data, model_dir, seed, VARIANTS[variant]), stdout=log, stderr=subprocess.STDOUT, check=False
        )
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"{variant} seed {seed} failed with exit code {done.returncode}; see {log_file}")
    summary = json.loads((model_dir / "training_summary.json").read_text())
    row = {"variant": variant, "seed": seed, "flags": VARIANTS[variant], **chosen_settings(summary),
           "dev_ndcg@10": summary.get("trained_dev", {}).get("ndcg@10"),
           "train_seconds": summary.get("seconds", wall), "wall_seconds": wall, **scorer.score(model_dir)}  # fmt: skip
    shutil_rmtree(model_dir / "trials")  # a study keeps models and summaries, not per-trial heads
    return row


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def markdown(results: dict) -> str:
    base = results.get("bare encoder", {}).get("test", {})
    lines = ["| variant | seed | chosen | dev | all | seen | unseen | hybrid w | hybrid all/seen/unseen | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    if base:
        lines.append(
            "| bare encoder | - | - | - | " + " | ".join(f"{base[s]:.4f}" for s in SLICE_NAMES) + " | - | - | - |"
        )
    runs = [row for key, row in results.items() if key != "bare encoder"]
    for row in runs:
        chosen = ", ".join(f"{k.removeprefix('chosen_')}={v:g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in chosen_settings(row).items() if k != "kept_identity")  # fmt: skip
        hybrid = "/".join(f"{row['hybrid'][s]:.4f}" for s in SLICE_NAMES) if "hybrid" in row else "-"
        lines.append(
            f"| {row['variant']} | {row['seed']} | {chosen} | {row['dev_ndcg@10'] or float('nan'):.4f} | "
            + " | ".join(f"{row['test'][s]:.4f}" for s in SLICE_NAMES)
            + f" | {row.get('hybrid_weight', '-')} | {hybrid} | {row['train_seconds']:.0f} |"
        )
    lines += ["", "Mean +- sample standard deviation over carves (seeds):", "",
              "| variant | carves | dev | all | seen | unseen | hybrid unseen | train s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant in dict.fromkeys(row["variant"] for row in runs):
        rows = [row for row in runs if row["variant"] == variant]
        cells = [mean_sd([r["dev_ndcg@10"] for r in rows])] + [
            mean_sd([r["test"][s] for r in rows]) for s in SLICE_NAMES
        ]
        cells.append(mean_sd([r["hybrid"]["unseen"] for r in rows if "hybrid" in r]))
        cells.append(f"{statistics.mean(r['train_seconds'] for r in rows):.0f}")
        lines.append(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dev_folder(data: str, seed: int, root: Path) -> Path:
    """A BEIR folder whose ``test`` qrels are the dev queries ``train.py --seed SEED`` would carve from ``data``'s
    training queries and whose ``train`` qrels are the rest of its pairs (module docstring, ``--dev-only``)."""
    from modeling.data.ir_data import load_ir_data
    from modeling.data.training_data import load_training_data

    folder = root / f"outer-{seed}"
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    carved = load_training_data(data, 0.1, seed=seed)
    train = load_ir_data(data, "train")
    dev_texts = set(carved.dev_queries.values())
    rows = {"train": [], "test": []}
    for qid, docs in train.qrels.items():
        text = train.queries[qid]
        for doc, score in docs.items():
            if text in dev_texts:
                rows["test"].append((qid, doc, score))
            elif train.corpus.get(doc) in carved.pairs.get(text, ()):
                rows["train"].append((qid, doc, score))
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(Path(data).resolve() / name)
    for split, split_rows in rows.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in split_rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS))
    parser.add_argument("--carves", nargs="+", type=int, default=[0], help="seeds of the dev carve (and training)")
    parser.add_argument("--output", default="runs/study")
    parser.add_argument(
        "--dev-only",
        nargs="+",
        type=int,
        metavar="SEED",
        help="score on the dev queries of these outer carves instead of the test split (docstring)",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the saved models of the results already in OUTPUT again (no training), e.g. after a scoring fix",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.dev_only:
        for outer in args.dev_only:
            folder = dev_folder(args.data, outer, Path(args.output))
            study(str(folder), args.variants, args.carves, Path(args.output) / f"outer-{outer}-runs", args.rescore)
        return 0
    return study(args.data, args.variants, args.carves, Path(args.output), args.rescore)


def study(data: str, variants: list[str], carves: list[int], output: Path, rescore: bool = False) -> int:
    """Every (variant, carve) of ``data`` trained and scored on its test split; results under ``output``. With
    ``rescore``, only the results already there are scored again from their saved models."""
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    scorer = Scorer(data)
    if rescore:
        for key, row in results.items():
            model_dir = output / key
            if key != "bare encoder" and (model_dir / "training_summary.json").is_file():
                row.update(scorer.score(model_dir))
                print(key, json.dumps(row.get("hybrid")), row.get("hybrid_normalisation"), flush=True)
        results_file.write_text(json.dumps(results, indent=2))
        (output / "results.md").write_text(markdown(results))
        return 0
    if "bare encoder" not in results:
        results["bare encoder"] = scorer.score(None)
    for variant in variants:
        for seed in carves:
            key = f"{variant}/seed-{seed}"
            if key in results:
                continue
            results[key] = run_one(data, output, variant, seed, scorer)
            print(key, json.dumps({k: v for k, v in results[key].items() if k != "flags"}), flush=True)
            results_file.write_text(json.dumps(results, indent=2))
            (output / "results.md").write_text(markdown(results))
    results_file.write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
