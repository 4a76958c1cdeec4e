"""Every setting of a training run, in one dataclass whose field metadata are the command-line flags.

``build_parser()`` turns the fields into argparse arguments (flag, help, choices, type), ``from_args`` turns the
parsed namespace back into ``TrainSettings``, and ``training_arguments`` turns settings plus one trial of the
(learning rate, weight decay) grid into the library's ``SentenceTransformerTrainingArguments``. A new setting is
one field here.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from modeling.model.projection_head import INITS, KINDS
from modeling.training.dev import DEV_METRIC
from modeling.training.losses import LOSSES

# What --placement trains -> the layout the saved model has (``modeling.model.layout``). The reduced designs
# (issue 13) all save a Router with a map per side into the smaller space:
#   fixed-documents: documents keep the PCA start (never trained), queries get a trained map into that space;
#   two-maps: both maps trained by the loss; distill: both maps trained to reproduce the scores of a full-width
#   query-only head trained first (``modeling.training.distill``); distill-queries: the same with the document
#   map kept at the PCA start.
PLACEMENT_LAYOUTS = {
    "query": "query",
    "symmetric": "symmetric",
    "fixed-documents": "routes",
    "two-maps": "routes",
    "distill": "routes",
    "distill-queries": "routes",
}
REDUCED_DEFAULT = "distill"  # chosen on dev (README, "Reduced models"); what --out-dim alone trains
DEFAULT_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
# Decay of the head's change D (not of W0): a pull toward the identity start, chosen on dev like the learning rate.
DEFAULT_WEIGHT_DECAYS = (0.0, 1.0)
WARMUP_RATIO = 0.1


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a share in [0, 1), got {text!r}")
    return value


def margin_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if not math.isfinite(value) or not -1 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be a cosine difference in [-1, 2] or 'none', got {text!r}")
    return value


def flag(name: str, group: str, help: str, **argparse_kwargs):
    """A settings field's default plus its command-line flag (``metadata`` carries what argparse needs)."""
    default = argparse_kwargs.pop("default", None)
    metadata = {"flag": name, "group": group, "help": help, **argparse_kwargs}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


DEFAULT_PSEUDO_WEIGHT = 3.0  # distill: the pseudo-queries' KL term against the training queries' (README)
DEFAULT_ANCHOR_WEIGHT = 2.0  # outer dev carves: ahead of 1 and 4 (README, "The anchor's weight")
DISTILL_PLACEMENTS = ("distill", "distill-queries")
DEFAULT_AVERAGE_CARVES = 5  # quality_study.py --dev-only: +0.015 dev nDCG@10 over one run (README, issue 10)


@dataclass
class TrainSettings:
    # data
    data: str | None = flag(
        "--data", "data", "BEIR folder, datasets Hub id/folder, or CSV/JSONL/Parquet file (default: the demo catalogue)"
    )
    dev_fraction: float = flag(
        "--dev-fraction",
        "data",
        "share of training queries held out for dev when the data has no dev split (default 0.1)",
        default=0.1,
        type=fraction,
    )
    # model
    encoder: str | None = flag(
        "--encoder", "model", "sentence-transformers encoder path or Hub id (default: all-MiniLM-L6-v2, offline)"
    )
    kind: str = flag("--kind", "model", "head kind (default linear)", default="linear", choices=KINDS)
    placement: str | None = flag(
        "--placement",
        "model",
        "query: head on queries only, corpus index stays valid (default without --out-dim); symmetric: one head on "
        "both sides; for a reduced --out-dim: fixed-documents (documents keep the PCA map, queries get a trained "
        "map into it), two-maps (a trained map per side), distill (default with --out-dim: a map per side trained "
        "to reproduce a full-width query-only head's scores over the whole corpus), distill-queries (the same, documents "
        "kept at the PCA map)",
        choices=tuple(PLACEMENT_LAYOUTS),
    )
    out_features: int | None = flag(
        "--out-dim",
        "model",
        "output dimension, at most the encoder's; smaller makes a smaller index (default placement then: "
        f"{REDUCED_DEFAULT})",
        type=int,
        metavar="OUT_DIM",
    )
    pseudo_queries: int = flag(
        "--pseudo-queries",
        "model",
        "up to this many pseudo-queries (each document's first sentence, e.g. its title): distilled beside the "
        "training queries (distill placements) and anchored to the bare encoder's ranking (--anchor-weight), so "
        "documents no training query touches are placed too (0: off; default 50000)",
        default=50_000,
        type=int,
    )
    pseudo_sentences: int = flag(
        "--pseudo-sentences",
        "model",
        "sentences per document made pseudo-queries: the first, plus this many minus one drawn at random from the "
        "rest (default 1: the first only)",
        default=1,
        type=int,
    )
    init: str | None = flag(
        "--init", "model", "head initialisation (default: identity, or PCA for a reduced head)", choices=INITS
    )
    # training
    loss: str = flag(
        "--loss",
        "training",
        "; ".join(f"{name}: {spec.help}" for name, spec in LOSSES.items()),
        default="mnrl",
        choices=tuple(LOSSES),
    )
    hard_negatives: int = flag(
        "--hard-negatives",
        "training",
        "pool of hard negatives: the frozen base's top K non-positive documents of each pair, from which "
        "--negatives-per-pair are drawn afresh every epoch, added to any negatives the data gives "
        "(mnrl only; 0: none; default 20)",
        default=20,
        type=int,
        metavar="K",
    )
    negatives_per_pair: int = flag(
        "--negatives-per-pair",
        "training",
        "hard negatives drawn per pair per epoch from the pool (default 1; equal to --hard-negatives: the static top K)",
        default=1,
        type=int,
    )
    negative_margin: float | None = flag(
        "--negative-margin",
        "training",
        "false-negative guard: only documents the base scores at least this far below the pair's positive "
        "(cosine) are negatives; 'none': no guard (default: none; on SciFact dev, margin 0 scored lower)",
        default=None,
        type=margin_or_none,
    )
    negative_guard: str = flag(
        "--negative-guard",
        "training",
        "where the margin applies: pool (drop documents from the pool, default) or gist (the library's "
        "GISTEmbedLoss masks in-batch and hard negatives with the frozen base as guide)",
        default="pool",
        choices=("pool", "gist"),
    )
    selection_carves: int = flag(
        "--selection-carves",
        "training",
        "when dev is carved from the training data: run the grid on this many carves and choose the setting and "
        "epoch by dev nDCG@10 averaged over them (less selection noise, that many times the trials; default 1)",
        default=1,
        type=int,
    )
    pseudo_scorer: str = flag(
        "--pseudo-scorer",
        "model",
        "distill placements: who scores the pseudo-queries, the bare encoder (default: on outer dev carves it led "
        "for both losses) or the full-width teacher",
        default="bare",
        choices=("bare", "teacher"),
    )
    pseudo_weight: float = flag(
        "--pseudo-weight",
        "training",
        f"distill placements: weight of the pseudo-queries' KL term against the training queries' (default "
        f"{DEFAULT_PSEUDO_WEIGHT:g})",
        default=DEFAULT_PSEUDO_WEIGHT,
        type=float,
    )
    anchor_weight: float | None = flag(
        "--anchor-weight",
        "training",
        "full-width query heads: weight of a KL term that keeps the head's ranking of the pseudo-queries (each "
        "document's first sentence, --pseudo-queries of them) at the bare encoder's, so documents no training query "
        "touches keep their place (0: off; default 2, and 0 for a distilled model's teacher, which this flag sets "
        "when given)",
        default=None,
        type=float,
    )
    average_carves: int | None = flag(
        "--average-carves",
        "training",
        "run the whole job (grid, choice on dev, refit) K times, each on its own carve of dev from the training "
        "data and its own seed (with a given dev split: its own seed), and save the average of the K heads' "
        "weights, a soup that keeps what the runs agree on (K times the training time; 1: off; default 5, or 1 "
        "with --selection-carves)",
        default=None,
        type=int,
        metavar="K",
    )
    unseen_veto: bool = flag(
        "--unseen-veto",
        "training",
        "never choose a trial that is below the bare encoder on the unseen-document half of dev by more than 1.64 "
        "standard errors (off by default: on SciFact it vetoed most trials and picked a worse one)",
        default=False,
        action="store_true",
    )
    learning_rates: tuple[float, ...] = flag(
        "--learning-rate",
        "training",
        "one or more learning rates; several are tried and the best on dev kept (default: 3e-4 1e-3 3e-3)",
        default=DEFAULT_LEARNING_RATES,
        type=positive_float,
        nargs="+",
        metavar="LEARNING_RATE",
    )
    epochs: int = flag(
        "--epochs",
        "training",
        "epochs per trial of the grid; the best epoch on dev is kept (default 20)",
        default=20,
        type=int,
    )
    batch_size: int = flag("--batch-size", "training", "per-process batch size (default 64)", default=64, type=int)
    weight_decays: tuple[float, ...] = flag(
        "--weight-decay",
        "training",
        "one or more decays of the head's change, a pull back toward its start (the identity, or the PCA map of a "
        "reduced head); several are tried and the best on dev kept (default: 0 1)",
        default=DEFAULT_WEIGHT_DECAYS,
        type=non_negative_float,
        nargs="+",
        metavar="WEIGHT_DECAY",
    )
    scale: float = flag(
        "--scale", "training", "mnrl similarity scale, 1/temperature (default 20)", default=20.0, type=positive_float
    )
    interpolate: bool = flag(
        "--no-interpolate",
        "training",
        "keep the trained head as is instead of the dev-best interpolation between it and the identity "
        "(0.25/0.5/0.75/1)",
        default=True,
        action="store_false",
    )
    refit: bool = flag(
        "--no-refit",
        "training",
        "when the dev split was carved from the training data, do not retrain on all of it with the chosen settings",
        default=True,
        action="store_false",
    )
    seed: int = flag(
        "--seed", "training", "seed of the dev carve, the head and the trainer (default 0)", default=0, type=int
    )
    # output
    output_dir: Path | None = flag(  # noqa: RUF009  (a Path default is None)
        "--output-dir", "output", "where the model goes (default: runs/<data>-<kind>-<placement>)", type=Path
    )
    cache_dir: str | None = flag(
        "--cache-dir",
        "output",
        "embedding cache folder (default: $FROZEN_HEAD_CACHE, else ~/.cache/frozen-head/embeddings)",
    )
    cache_storage: str = flag(
        "--cache-storage",
        "output",
        "how cached embeddings are stored: float32 (exact, default) or float16 (half the disk, for millions of texts)",
        default="float32",
        choices=("float32", "float16"),
    )
    resume: bool = flag(
        "--resume", "output", "continue an interrupted run in --output-dir (same data and settings)", default=False,
        action="store_true",
    )  # fmt: skip
    checkpoint_seconds: float = flag(
        "--checkpoint-seconds",
        "output",
        "a trial writes a resume point (for --resume after a kill) at an epoch's end once this many seconds passed "
        "since its last one; 0: every epoch (default 60: trials of a few seconds write none)",
        default=60.0,
        type=non_negative_float,
    )
    push_to_hub: str | None = flag(
        "--push-to-hub", "output", "push the trained model to this Hub repo", metavar="ORG/NAME"
    )
    private: bool = flag("--private", "output", "make the pushed repo private", default=False, action="store_true")
    show_progress: bool = flag("--quiet", "output", "no progress bars", default=True, action="store_false")
    format: str = flag(
        "--format",
        "output",
        "custom: the head's own module, loads with trust_remote_code=True (default); stock: a linear head saved as "
        "sentence-transformers' own Dense (in its Router), loads without trust_remote_code",
        default="custom",
        choices=("custom", "stock"),
    )

    @property
    def layout(self) -> str:
        """The saved model's layout (``query``, ``symmetric`` or ``routes``) for this placement."""
        return PLACEMENT_LAYOUTS[self.placement]

    def __post_init__(self) -> None:
        self.learning_rates = tuple(self.learning_rates)
        self.weight_decays = tuple(self.weight_decays)
        if self.placement is None:  # --out-dim alone trains the reduced default
            self.placement = "query" if self.out_features is None else REDUCED_DEFAULT
        if self.anchor_weight is None:  # the distilled student has its own pseudo-query term (README, "Reduced models")
            self.anchor_weight = 0.0 if self.placement in DISTILL_PLACEMENTS else DEFAULT_ANCHOR_WEIGHT
        if self.average_carves is None:  # --selection-carves spends the extra carves on selection instead
            self.average_carves = 1 if self.selection_carves > 1 else DEFAULT_AVERAGE_CARVES
        if self.output_dir is not None:
            self.output_dir = Path(self.output_dir)

    def training_arguments(self, trial: Trial, directory: Path, placement_routes: dict[str, str]):
        """The library's arguments for one trial; a refit (``trial.stop_after_epoch``) has no dev selection."""
        refit = trial.stop_after_epoch is not None
        return SentenceTransformerTrainingArguments(
            output_dir=str(directory),
            num_train_epochs=self.epochs,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=512,
            learning_rate=trial.learning_rate,
            weight_decay=trial.weight_decay,
            warmup_steps=WARMUP_RATIO,
            eval_strategy="no" if refit else "epoch",
            save_strategy="epoch",  # resume points; ``trial.ResumePoints`` lets one through every checkpoint_seconds
            save_total_limit=2,
            load_best_model_at_end=False,  # the best epoch is kept in memory (``trial.BestEpochInMemory``)
            metric_for_best_model=None if refit else DEV_METRIC,
            greater_is_better=None if refit else True,
            logging_strategy="epoch",
            report_to="none",
            seed=self.seed,
            data_seed=self.seed,
            batch_sampler=LOSSES[self.loss].batch_sampler,
            router_mapping=placement_routes,
            disable_tqdm=not self.show_progress,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            use_cpu=not torch.cuda.is_available(),
            # The loss runs the model twice per step (queries, then documents); DDP's unused-parameter search would
            # see the head's parameters "ready twice". Every head parameter gets a gradient from the query pass.
            ddp_find_unused_parameters=False,  # also what makes torchrun on CPU a real gloo multi-process run
        )

    def negatives(self):
        """The hard-negative recipe (``modeling.training.negatives.HardNegatives``), or None when off or when the
        loss trains on labelled rows (hard negatives feed the ranking loss only)."""
        from modeling.training.negatives import HardNegatives

        if self.hard_negatives <= 0 or LOSSES[self.loss].labelled:
            return None
        margin = self.negative_margin if self.negative_guard == "pool" else None
        return HardNegatives(self.hard_negatives, self.negatives_per_pair, margin)

    def grid(self) -> list[Trial]:
        """The trials to run: every (learning rate, weight decay) point, decays outermost."""
        return [Trial(lr, wd) for wd in self.weight_decays for lr in self.learning_rates]


@dataclass(frozen=True)
class Trial:
    """One point of the grid; ``stop_after_epoch`` marks the final refit (no dev, a fixed number of epochs)."""

    learning_rate: float
    weight_decay: float
    stop_after_epoch: int | None = None

    @property
    def name(self) -> str:
        return "refit" if self.stop_after_epoch is not None else f"lr-{self.learning_rate:g}-wd-{self.weight_decay:g}"


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in fields(TrainSettings):
        meta = dict(spec.metadata)
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flag_name = meta.pop("flag")
        meta.pop("group")
        default = spec.default
        group.add_argument(
            flag_name, dest=spec.name, default=list(default) if isinstance(default, tuple) else default, **meta
        )
    return parser


def validate(settings: TrainSettings, parser: argparse.ArgumentParser) -> None:
    """Checks across flags (one flag's own range is its ``type``); ``parser.error`` exits with code 2."""
    if settings.epochs < 1 or settings.batch_size < 2:
        parser.error("--epochs must be >= 1 and --batch-size >= 2")
    if settings.hard_negatives < 0:
        parser.error("--hard-negatives must be >= 0")
    if settings.anchor_weight < 0 or settings.pseudo_weight < 0:
        parser.error("--anchor-weight and --pseudo-weight must be >= 0")
    if settings.selection_carves < 1 or settings.average_carves < 1:
        parser.error("--selection-carves and --average-carves must be >= 1")
    if settings.selection_carves > 1 and settings.average_carves > 1:
        parser.error(
            "--selection-carves and --average-carves are two uses of extra carves: choose one "
            "(e.g. --average-carves 1 --selection-carves 3)"
        )
    if settings.negatives_per_pair < 1:
        parser.error("--negatives-per-pair must be >= 1")
    if settings.hard_negatives and settings.negatives_per_pair > settings.hard_negatives:
        parser.error(f"--negatives-per-pair {settings.negatives_per_pair} exceeds the pool (--hard-negatives)")
    if settings.negative_guard == "gist" and settings.negative_margin is None:
        parser.error("--negative-guard gist needs a --negative-margin (a number)")
    if settings.format == "stock" and settings.kind != "linear":
        parser.error(
            f"--format stock needs --kind linear: a {settings.kind} head has a non-linear branch that "
            "sentence-transformers' own Dense module cannot hold (or keep --format custom)"
        )
    if settings.pseudo_sentences < 1:
        parser.error("--pseudo-sentences must be >= 1 (1: each document's first sentence only)")
    if settings.pseudo_queries < 0:
        parser.error("--pseudo-queries must be >= 0")
    if settings.out_features is not None and settings.out_features < 1:
        parser.error("--out-dim must be >= 1")
    if settings.out_features is not None and settings.placement == "query":
        parser.error(
            "--out-dim with --placement query: a query-only head must keep the document dimension; drop --placement "
            f"(the reduced default, {REDUCED_DEFAULT}) or pick one of "
            + ", ".join(name for name in PLACEMENT_LAYOUTS if name != "query")
        )
    if settings.placement in ("fixed-documents", "distill-queries") and settings.out_features is None:
        parser.error(f"--placement {settings.placement} needs --out-dim (at full width it is --placement query)")
    if settings.push_to_hub and "/" not in settings.push_to_hub:
        parser.error("--push-to-hub takes ORG/NAME")
    if settings.output_dir is not None and settings.output_dir.exists() and not settings.output_dir.is_dir():
        parser.error(f"--output-dir {settings.output_dir} is a file, not a folder")


def parse_settings(argv: list[str] | None = None, description: str | None = None) -> TrainSettings:
    parser = build_parser(description)
    settings = TrainSettings(**vars(parser.parse_args(argv)))
    validate(settings, parser)
    return settings
