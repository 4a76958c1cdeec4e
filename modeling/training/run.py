"""The whole training job: data -> frozen encoder + head -> cache -> learning-rate trials on dev -> saved model.

Model selection never sees a test split: the learning rate and the epoch are chosen on dev nDCG@10, and
the identity head (the bare encoder) is always a candidate, so the saved model is never worse than the
encoder on dev.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from modeling.model.build import build_model, encoder_display_name, find_head, load_encoder, save_model
from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.training_data import TrainingData, as_labelled_dataset, as_pairs_dataset
from modeling.training.trial import (
    LOSSES,
    TrialConfig,
    TrialResult,
    dev_evaluator,
    head_state,
    probe_pairs,
    run_trial,
)

DEFAULT_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
# Decay of the head's change D (not of W0): a pull toward the identity start, chosen on dev like the learning rate.
DEFAULT_WEIGHT_DECAYS = (0.0, 1.0)
# Weight-space interpolation between the start (identity) and the trained head, picked on dev (WiSE-FT,
# Wortsman et al. 2022): a cheap pull toward the encoder that protects queries unlike the training ones.
INTERPOLATIONS = (0.25, 0.5, 0.75, 1.0)
DEV_NOISE = 0.005  # dev nDCG@10 differences below this are noise: prefer the larger step toward the trained head


@dataclass
class TrainSettings:
    output_dir: Path
    encoder: str | None = None
    kind: str = "linear"
    placement: str = "query"
    out_features: int | None = None
    init: str | None = None
    loss: str = "mnrl"
    hard_negatives: int = 0
    learning_rates: tuple[float, ...] = DEFAULT_LEARNING_RATES
    epochs: int = 20
    batch_size: int = 64
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS
    scale: float = 20.0
    seed: int = 0
    cache_dir: str | None = None
    resume: bool = False
    show_progress: bool = True
    interpolate: bool = True
    refit: bool = True


@dataclass
class TrainSummary:
    output_dir: str
    data_name: str
    num_pairs: int
    num_train_queries: int
    num_dev_queries: int
    encoder: str
    encoder_calls: int
    cached_texts: int
    base_dev: dict[str, float]
    trained_dev: dict[str, float]
    chosen_learning_rate: float | None
    chosen_epoch: float | None
    chosen_weight_decay: float | None = None
    trials: list[dict] = field(default_factory=list)
    guard: str = ""
    kept_identity: bool = False
    interpolation: float = 1.0
    refit_on_dev: bool = False
    seconds: float = 0.0


class CollapseError(RuntimeError):
    """Every trial was stopped by the collapse guard; the message says why and what to change."""


def _init_distributed() -> None:
    """Start the torchrun process group (if any) now, so every rank encodes its share of the cache fill."""
    from accelerate import PartialState

    # cpu=True where there is no GPU: without it accelerate does not see a multi-process CPU (gloo) run at all.
    PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """Rank 0 under torchrun, or the only process: the one that prints and saves."""
    return int(os.environ.get("RANK", "0")) == 0


def training_dataset(data: TrainingData, settings: TrainSettings, twin):
    if settings.loss != "mnrl":
        return as_labelled_dataset(data, seed=settings.seed)
    pairs = as_pairs_dataset(data)
    if settings.hard_negatives <= 0:
        return pairs
    from sentence_transformers.util import mine_hard_negatives

    # Mined with the frozen base (the head is still the identity here), served from the cache: no encoder call.
    # A query's other positives are never taken as its negatives: mine_hard_negatives excludes all positives of an
    # anchor that appears in several rows, and every positive of a query is a row here.
    return mine_hard_negatives(
        pairs,
        twin,
        corpus=data.corpus,
        num_negatives=settings.hard_negatives,
        range_min=0,
        relative_margin=0.05,
        sampling_strategy="top",
        output_format="n-tuple",
        batch_size=512,
        verbose=False,
    )


def dev_metrics(evaluator, twin) -> dict[str, float]:
    scores = evaluator(twin)
    prefix = f"{evaluator.name}_cosine_"
    return {key[len(prefix) :]: float(value) for key, value in scores.items() if key.startswith(prefix)}


def trial_config(
    settings: TrainSettings, learning_rate: float, weight_decay: float, init: str, stop_after_epoch: int | None = None
) -> TrialConfig:
    return TrialConfig(
        learning_rate=learning_rate,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        weight_decay=weight_decay,
        loss=settings.loss,
        scale=settings.scale,
        seed=settings.seed,
        init=init,
        stop_after_epoch=stop_after_epoch,
    )


def interpolate(start: dict, end: dict, t: float) -> dict:
    return {key: start[key] + t * (end[key] - start[key]) if end[key].is_floating_point() else end[key] for key in end}


def choose_interpolation(head, start: dict, end: dict, evaluator, twin) -> tuple[float, float]:
    """The largest interpolation weight whose dev nDCG@10 is within ``DEV_NOISE`` of the best."""
    scores = {}
    for t in INTERPOLATIONS:
        head.load_state_dict(interpolate(start, end, t))
        scores[t] = dev_metrics(evaluator, twin)["ndcg@10"]
    top = max(scores.values())
    best = max(t for t in INTERPOLATIONS if scores[t] >= top - DEV_NOISE)
    if is_main_process():
        print(
            "dev nDCG@10 by interpolation toward the trained head: "
            + ", ".join(f"{t:g}: {v:.4f}" for t, v in scores.items())
        )
    return best, scores[best]


def train(data: TrainingData, settings: TrainSettings, card_hook=None) -> TrainSummary:
    """Run the job and save the model to ``settings.output_dir``; ``card_hook(model, summary)`` fills the card."""
    if settings.loss not in LOSSES:
        raise ValueError(f"Unknown loss {settings.loss!r}; choose one of {LOSSES}.")
    started = time.time()
    torch.manual_seed(settings.seed)
    encoder = load_encoder(settings.encoder)
    head_kwargs = {"init": settings.init} if settings.init else {}
    model = build_model(
        encoder,
        kind=settings.kind,
        placement=settings.placement,
        out_features=settings.out_features,
        seed=settings.seed,
        **head_kwargs,
    )
    head = find_head(model)
    cache = EmbeddingCache(prefix_model(model), root=settings.cache_dir, show_progress_bar=settings.show_progress)
    queries, documents = data.all_texts()
    _init_distributed()
    cache.ensure(queries + documents, description="Embedding training and dev texts")  # split over torchrun ranks
    if head.out_features < head.in_features and head.init != "default":
        head.fit_pca(cache.get(documents[:20000]))
    twin = cached_twin(model, cache)
    if card_hook is not None:
        card_hook(model, None)  # install the card data before the trainer's card callback reads it
    # The card's widget examples would run the full model (encoder included) on training texts: skip them.
    model.model_card_data.generate_widget_examples = False

    dataset = training_dataset(data, settings, twin)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if len(dataset) < settings.batch_size * world_size:
        raise ValueError(
            f"Only {len(dataset)} training rows for a batch of {settings.batch_size} x {world_size} process(es): "
            f"not one full batch. Lower --batch-size to at most {max(2, len(dataset) // world_size)}."
        )
    evaluator = dev_evaluator(data.dev_queries, data.dev_corpus, data.dev_relevant)
    guard_pairs = probe_pairs(data.dev_queries, data.dev_corpus, data.dev_relevant, seed=settings.seed)
    start_state = head_state(head)
    base_dev = dev_metrics(evaluator, cached_twin(encoder, cache))  # the bare encoder, from the same cache

    results: list[TrialResult] = []
    states: dict[int, dict] = {}
    grid = [(lr, wd) for wd in settings.weight_decays for lr in settings.learning_rates]
    for learning_rate, weight_decay in grid:
        head.load_state_dict(start_state)
        config = trial_config(settings, learning_rate, weight_decay, head.init)
        trial_dir = Path(settings.output_dir) / "trials" / f"lr-{learning_rate:g}-wd-{weight_decay:g}"
        result = run_trial(
            twin,
            head,
            dataset,
            evaluator,
            guard_pairs,
            config,
            settings.placement,
            trial_dir,
            settings.resume,
            settings.show_progress,
        )
        results.append(result)
        states[len(results) - 1] = head_state(head)
        if is_main_process():
            epoch = "-" if result.best_epoch is None else f"{result.best_epoch:.0f}"
            print(
                f"learning rate {learning_rate:g}, weight decay {weight_decay:g}: best dev nDCG@10 {result.best_dev:.4f} "
                f"at epoch {epoch}; guard {result.guard}",
                flush=True,
            )

    usable = [i for i, r in enumerate(results) if not r.stopped and not math.isnan(r.best_dev)]
    if not usable:
        reasons = "\n".join(f"- lr {r.learning_rate:g}, weight decay {r.weight_decay:g}: {r.guard}" for r in results)
        raise CollapseError(f"Every training run was stopped by the collapse guard:\n{reasons}")
    best_index = max(usable, key=lambda i: results[i].best_dev)
    best = results[best_index]
    interpolation, best_dev = 1.0, best.best_dev
    if settings.interpolate and head.init == "identity":
        interpolation, best_dev = choose_interpolation(head, start_state, states[best_index], evaluator, twin)
    kept_identity = head.init == "identity" and best_dev <= base_dev["ndcg@10"]
    head.load_state_dict(start_state if kept_identity else interpolate(start_state, states[best_index], interpolation))
    trained_dev = dev_metrics(evaluator, twin)  # the selected model, before any refit: an honest dev figure
    refit = settings.refit and data.dev_carved and not kept_identity and best.best_epoch is not None
    if refit:
        # The dev queries were carved from the training data: train once more on all of it with the chosen
        # learning rate, for the chosen number of epochs of the same schedule, then apply the chosen interpolation.
        head.load_state_dict(start_state)
        config = trial_config(
            settings, best.learning_rate, best.weight_decay, head.init, stop_after_epoch=math.ceil(best.best_epoch)
        )
        full = training_dataset(data.with_dev_merged(), settings, twin)
        result = run_trial(
            twin, head, full, evaluator, guard_pairs, config, settings.placement,
            Path(settings.output_dir) / "trials" / "refit", settings.resume, settings.show_progress,
        )  # fmt: skip
        if result.stopped:
            raise CollapseError(f"The final refit on all the data was stopped by the collapse guard: {result.guard}")
        head.load_state_dict(interpolate(start_state, head_state(head), interpolation))
        if is_main_process():
            print(
                f"refit on train + dev for {config.stop_after_epoch} epochs at learning rate {best.learning_rate:g}, "
                f"weight decay {best.weight_decay:g}"
            )

    summary = TrainSummary(
        output_dir=str(settings.output_dir),
        data_name=data.name,
        num_pairs=data.num_pairs,
        num_train_queries=len(data.pairs),
        num_dev_queries=len(data.dev_queries),
        encoder=encoder_display_name(settings.encoder),
        encoder_calls=cache.encoded_texts,
        cached_texts=len(cache),
        base_dev=base_dev,
        trained_dev=trained_dev,
        chosen_learning_rate=None if kept_identity else best.learning_rate,
        chosen_epoch=None if kept_identity else best.best_epoch,
        chosen_weight_decay=None if kept_identity else best.weight_decay,
        trials=[asdict(r) for r in results],
        guard=best.guard,
        kept_identity=kept_identity,
        interpolation=0.0 if kept_identity else interpolation,
        refit_on_dev=refit,
        seconds=time.time() - started,
    )
    if is_main_process():
        if card_hook is not None:
            card_hook(model, summary)
        save_model(model, settings.output_dir)
        (Path(settings.output_dir) / "training_summary.json").write_text(json.dumps(asdict(summary), indent=2))
        from modeling.evaluation.plots import plot_dev_curves

        plots = Path(settings.output_dir) / "evaluation"
        plots.mkdir(exist_ok=True)
        plot_dev_curves(summary.trials, base_dev["ndcg@10"], plots / "training-dev-curves.png")
    return summary
