"""Train a projection head on a frozen sentence-transformers encoder.

    python train.py                                   # the embedded demo catalogue, offline, a few minutes
    python train.py --data PATH_OR_ID --output-dir DIR
    torchrun --nproc_per_node 2 train.py --data ...   # several processes (gloo on CPU)

The result loads anywhere with ``SentenceTransformer(DIR, trust_remote_code=True)``; with ``--format stock`` (a
linear head saved as the library's own Dense) with ``SentenceTransformer(DIR)``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from modeling.data.ir_data import DataError, missing_local_path
from modeling.training.settings import TrainSettings, parse_settings


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """The command line as ``TrainSettings`` (its fields are the flags); bad flags exit with code 2."""
    return parse_settings(argv, description=__doc__)


def configure_logging(main_process: bool) -> None:
    """The run's progress lines on the terminal, as plain lines, from rank 0 only."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("modeling")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    logger.propagate = False


def results_table(summary) -> str:
    rows = ["| dev split | nDCG@10 | MRR@10 | Recall@10 | Recall@100 |", "|---|---|---|---|---|"]
    for name, metrics in (("bare encoder", summary.base_dev), ("trained head", summary.trained_dev)):
        cells = [metrics.get(k, float("nan")) for k in ("ndcg@10", "mrr@10", "recall@10", "recall@100")]
        rows.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    from modeling.data.demo_data import demo_dataset_path
    from modeling.data.training_data import load_training_data
    from modeling.training.identity import ResumeMismatch
    from modeling.training.output import OutputDirError, check_output_dir
    from modeling.training.run import CollapseError, is_main_process, train

    configure_logging(is_main_process())
    if settings.push_to_hub:  # repo id, offline mode and token checked now, not after the whole run
        from modeling.hub import preflight

        try:
            preflight(settings.push_to_hub)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    source = settings.data or str(demo_dataset_path())
    name = Path(source.rstrip("/")).name
    if settings.output_dir is None:
        settings.output_dir = Path("runs") / f"{name}-{settings.kind}-{settings.placement}"
    output_dir = settings.output_dir
    try:
        check_output_dir(output_dir)  # before the data and the model load: nothing is lost to a late error
        if missing_local_path(settings.encoder):
            raise DataError(f"--encoder {settings.encoder!r}: file not found (no such folder).")
        data = load_training_data(source, dev_fraction=settings.dev_fraction, seed=settings.seed)
    except (DataError, OutputDirError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (output_dir / "modules.json").is_file() and not settings.resume:
        print(
            f"note: {output_dir} holds a model; it will be replaced (trials are retrained; use --resume to reuse them)"
        )
    print(
        f"data: {source} ({data.num_pairs} training pairs, {len(data.pairs)} queries; {len(data.dev_queries)} dev queries)"
    )
    card, fill = _card()
    try:
        summary = train(data, settings, model_card_data=card, fill_card=fill)
        _finish_distributed()
    except CollapseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (ResumeMismatch, OutputDirError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not is_main_process():
        return 0
    print()
    print(results_table(summary))
    chosen = (
        "kept the start: the identity, or the PCA map of a reduced head (no trial beat it on dev unvetoed)"
        if summary.kept_identity
        else (
            f"learning rate {summary.chosen_learning_rate:g}, weight decay {summary.chosen_weight_decay:g}, "
            f"epoch {summary.chosen_epoch:.0f}, "
            f"interpolation {summary.interpolation:g} of the way from the identity to the trained head"
        )
    )
    refit = "; then retrained on train + dev with these settings" if summary.refit_on_dev else ""
    print(f"\nchosen on dev: {chosen}{refit}; collapse guard: {summary.guard}")
    if summary.distill_epochs is not None:
        print(
            f"that was the full-width teacher; the {summary.out_features}-d model learned its scores for "
            f"{summary.distill_epochs} epochs (chosen on dev; 0 keeps the start: the teacher's queries projected by "
            "PCA), for the training queries and "
            f"{summary.pseudo_queries or 0:,} pseudo-queries ({summary.pseudo_source})"
        )
    if summary.out_features and summary.in_features and summary.out_features < summary.in_features:
        print(
            f"index: {4 * summary.out_features:,} bytes per document against {4 * summary.in_features:,} for the "
            f"encoder; by-document dev nDCG@10 {summary.trained_dev_unseen or float('nan'):.4f} (bare "
            f"{summary.base_dev_unseen or float('nan'):.4f}); candidates vetoed there: {len(summary.vetoes)}"
        )
    if summary.selection:
        print(f"selection: {summary.selection}")
    if summary.hybrid:
        print(
            f"hybrid with BM25: dense weight {summary.hybrid['dense_weight']:g} chosen on dev "
            f"(nDCG@10 {summary.hybrid['dev_ndcg@10']:.4f}), saved as hybrid.json for evaluate.py"
        )
    print(
        f"encoder calls this run: {summary.encoder_calls} texts ({summary.cached_texts} cached in total); {summary.seconds:.0f} s"
    )
    print(f"model saved to {output_dir.resolve()}")
    trust = "" if settings.format == "stock" else ", trust_remote_code=True"
    print(f"load it with SentenceTransformer({str(output_dir)!r}{trust})")
    print(f"evaluate it: python evaluate.py --model {output_dir} --data {source}")
    if settings.push_to_hub:
        from modeling.hub import PushError, push_model

        try:
            url = push_model(output_dir, settings.push_to_hub, private=settings.private)
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


def _card():
    """(card data, fill) from the card machinery, if model_card is importable (it always is once installed)."""
    try:
        from model_card import TrainingCard
    except ImportError:
        return None, None
    return TrainingCard.card_data(), TrainingCard.fill


if __name__ == "__main__":
    sys.exit(main())
