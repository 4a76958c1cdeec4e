"""Train a projection head on a frozen sentence-transformers encoder.

    python train.py                                   # the embedded demo catalogue, offline, a few minutes
    python train.py --data PATH_OR_ID --output-dir DIR
    torchrun --nproc_per_node 2 train.py --data ...   # several processes (gloo on CPU)

The result loads anywhere with ``SentenceTransformer(DIR, trust_remote_code=True)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from modeling.data.ir_data import DataError  # noqa: E402
from modeling.model.projection_head import INITS, KINDS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", help="BEIR folder, datasets Hub id/folder, or CSV/JSONL/Parquet file (default: the demo catalogue)"
    )
    data.add_argument(
        "--dev-fraction",
        type=float,
        default=0.1,
        help="share of training queries held out for dev when the data has no dev split (default 0.1)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--encoder", help="sentence-transformers encoder path or Hub id (default: all-MiniLM-L6-v2, offline)"
    )
    model.add_argument("--kind", choices=KINDS, default="linear", help="head kind (default linear)")
    model.add_argument(
        "--placement",
        choices=("query", "symmetric"),
        default="query",
        help="query: head on queries only, corpus index stays valid (default); symmetric: both sides",
    )
    model.add_argument(
        "--out-dim", type=int, help="output dimension (smaller than the encoder's needs --placement symmetric)"
    )
    model.add_argument(
        "--init", choices=INITS, help="head initialisation (default: identity, or PCA for a reduced head)"
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--loss",
        choices=("mnrl", "cosine-mse", "contrastive"),
        default="mnrl",
        help="mnrl: in-batch ranking (default); cosine-mse: MSE of cosine vs 0/1 labels; contrastive",
    )
    training.add_argument(
        "--hard-negatives",
        type=int,
        default=0,
        help="hard negatives per pair mined with the frozen encoder (mnrl only; default 0)",
    )
    training.add_argument(
        "--learning-rate",
        type=float,
        nargs="+",
        help="one or more learning rates; several are tried and the best on dev kept (default: 3e-4 1e-3 3e-3)",
    )
    training.add_argument(
        "--epochs", type=int, default=20, help="epochs per learning rate; the best epoch on dev is kept (default 20)"
    )
    training.add_argument("--batch-size", type=int, default=64, help="per-process batch size (default 64)")
    training.add_argument(
        "--weight-decay",
        type=float,
        nargs="+",
        help="one or more decays of the head's change, a pull back toward its identity start; several are tried and the best on dev kept (default: 0 1)",
    )
    training.add_argument("--scale", type=float, default=20.0, help="mnrl similarity scale, 1/temperature (default 20)")
    training.add_argument(
        "--no-interpolate",
        action="store_true",
        help="keep the trained head as is instead of the dev-best interpolation between it and the identity (0.25/0.5/0.75/1)",
    )
    training.add_argument(
        "--no-refit",
        action="store_true",
        help="when the dev split was carved from the training data, do not retrain on all of it with the chosen settings",
    )
    training.add_argument("--seed", type=int, default=0)
    out = parser.add_argument_group("output")
    out.add_argument("--output-dir", help="where the model goes (default: runs/<data>-<kind>-<placement>)")
    out.add_argument(
        "--cache-dir", help="embedding cache folder (default: $FROZEN_HEAD_CACHE, else ~/.cache/frozen-head/embeddings)"
    )
    out.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    out.add_argument("--push-to-hub", metavar="ORG/NAME", help="push the trained model to this Hub repo")
    out.add_argument("--private", action="store_true", help="make the pushed repo private")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.learning_rate and any(lr <= 0 for lr in args.learning_rate):
        parser.error("--learning-rate must be positive")
    if args.weight_decay and any(wd < 0 for wd in args.weight_decay):
        parser.error("--weight-decay must be >= 0")
    if args.epochs < 1 or args.batch_size < 2:
        parser.error("--epochs must be >= 1 and --batch-size >= 2")
    if args.hard_negatives and args.loss != "mnrl":
        parser.error("--hard-negatives works with --loss mnrl only")
    if args.out_dim is not None and args.placement == "query":
        parser.error("--out-dim needs --placement symmetric: a query-only head must keep the document dimension")
    if args.push_to_hub and "/" not in args.push_to_hub:
        parser.error("--push-to-hub takes ORG/NAME")
    return args


def results_table(summary) -> str:
    rows = ["| dev split | nDCG@10 | MRR@10 | Recall@10 | Recall@100 |", "|---|---|---|---|---|"]
    for name, metrics in (("bare encoder", summary.base_dev), ("trained head", summary.trained_dev)):
        cells = [metrics.get(k, float("nan")) for k in ("ndcg@10", "mrr@10", "recall@10", "recall@100")]
        rows.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from modeling.data.demo_data import demo_dataset_path
    from modeling.data.training_data import load_training_data
    from modeling.training.run import (
        DEFAULT_LEARNING_RATES,
        DEFAULT_WEIGHT_DECAYS,
        CollapseError,
        TrainSettings,
        is_main_process,
        train,
    )

    if args.push_to_hub:  # repo id, offline mode and token checked now, not after the whole run
        from modeling.hub import preflight

        try:
            preflight(args.push_to_hub)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    source = args.data or str(demo_dataset_path())
    try:
        data = load_training_data(source, dev_fraction=args.dev_fraction, seed=args.seed)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = Path(source.rstrip("/")).name
    output_dir = Path(args.output_dir or Path("runs") / f"{name}-{args.kind}-{args.placement}")
    if output_dir.exists() and any(output_dir.glob("modules.json")) and not args.resume:
        print(
            f"note: {output_dir} holds a model; it will be overwritten (trials are retrained; use --resume to reuse them)"
        )
    settings = TrainSettings(
        output_dir=output_dir,
        encoder=args.encoder,
        kind=args.kind,
        placement=args.placement,
        out_features=args.out_dim,
        init=args.init,
        loss=args.loss,
        hard_negatives=args.hard_negatives,
        learning_rates=tuple(args.learning_rate or DEFAULT_LEARNING_RATES),
        epochs=args.epochs,
        batch_size=args.batch_size,
        weight_decays=tuple(args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAYS),
        scale=args.scale,
        seed=args.seed,
        cache_dir=args.cache_dir,
        resume=args.resume,
        interpolate=not args.no_interpolate,
        refit=not args.no_refit,
        show_progress=not args.quiet,
    )
    print(
        f"data: {source} ({data.num_pairs} training pairs, {len(data.pairs)} queries; {len(data.dev_queries)} dev queries)"
    )
    try:
        summary = train(data, settings, card_hook=_card_hook())
        _finish_distributed()
    except CollapseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not is_main_process():
        return 0
    print()
    print(results_table(summary))
    chosen = (
        "kept the identity (no trial beat the bare encoder on dev)"
        if summary.kept_identity
        else (
            f"learning rate {summary.chosen_learning_rate:g}, weight decay {summary.chosen_weight_decay:g}, "
            f"epoch {summary.chosen_epoch:.0f}, "
            f"interpolation {summary.interpolation:g} of the way from the identity to the trained head"
        )
    )
    refit = "; then retrained on train + dev with these settings" if summary.refit_on_dev else ""
    print(f"\nchosen on dev: {chosen}{refit}; collapse guard: {summary.guard}")
    print(
        f"encoder calls this run: {summary.encoder_calls} texts ({summary.cached_texts} cached in total); {summary.seconds:.0f} s"
    )
    print(f"model saved to {output_dir.resolve()}")
    print(f"load it with SentenceTransformer({str(output_dir)!r}, trust_remote_code=True)")
    print(f"evaluate it: python evaluate.py --model {output_dir} --data {source}")
    if args.push_to_hub:
        from modeling.hub import PushError, push_model

        try:
            url = push_model(output_dir, args.push_to_hub, private=args.private)
        except (PushError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 4
        print(f"pushed to {url}")
    return 0


def _finish_distributed() -> None:
    """Under torchrun: wait for rank 0 to finish saving, then close the process group on every rank (a rank that
    exits with the group still open aborts with 'terminate called without an active exception')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _card_hook():
    """The card machinery, if model_card is importable (it always is once installed)."""
    try:
        from model_card import card_hook
    except ImportError:
        return None
    return card_hook


if __name__ == "__main__":
    sys.exit(main())
