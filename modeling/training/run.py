"""The whole training job as named stages: prepare -> run_grid -> choose -> refit -> summarize -> save.

``--placement distill`` adds a student: ``start_student`` (the reduced model learns the chosen teacher's scores and
is scored on dev at every epoch), the same for every other carve of ``--average-carves`` (each carve's teacher, its
dev split), ``choose_student`` (the epoch by dev pooled over the carves) and ``refit_student`` (the final teacher
distilled on all the queries for that many epochs).

Model selection never sees a test split: the (learning rate, weight decay) grid point, the epoch and the
interpolation are chosen on dev nDCG@10, and the identity head (the bare encoder) is always a candidate, so the
saved model is never worse than the encoder on dev. Stages compute; only ``save`` writes the model folder.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from torch import nn

from modeling.cache.cached_input import cached_twin, prefix_model
from modeling.cache.embedding_cache import EmbeddingCache
from modeling.data.training_data import TrainingData
from modeling.model.build import build_model, encoder_display_name, load_encoder, save_model
from modeling.model.layout import ModelLayout
from modeling.training.dataset import training_dataset
from modeling.training.dev import SELECTION_METRIC, dev_evaluator, dev_metrics, probe_pairs
from modeling.training.distill import DistillResult, PseudoQueries, distill, start_at_teacher
from modeling.training.hybrid import HybridChoice, choose_hybrid, pool_hybrid, save_hybrid
from modeling.training.identity import check_and_record, run_identity
from modeling.training.losses import LOSSES
from modeling.training.negatives import base_guide
from modeling.training.output import check_output_dir, staging_dir, swap_in
from modeling.training.pseudo_queries import pseudo_description, pseudo_queries
from modeling.training.selection import PooledChoice, carve_seeds, pooled_choice, recarve, vetoed
from modeling.training.settings import DISTILL_PLACEMENTS, TrainSettings, Trial
from modeling.training.trial import TrialLog, TrialResult, head_state, run_trial

logger = logging.getLogger(__name__)

# Weight-space interpolation between the start (identity) and the trained head, picked on dev (WiSE-FT,
# Wortsman et al. 2022): a cheap pull toward the encoder that protects queries unlike the training ones.
INTERPOLATIONS = (0.25, 0.5, 0.75, 1.0)
DEV_NOISE = 0.005  # dev nDCG@10 differences below this are noise: prefer the larger step toward the trained head
DISTILL_DOCUMENTS = 50_000  # a larger corpus is distilled on a seeded sample of this many documents
UNSEEN_TOLERANCE = 0.005  # issue 13: below the bare encoder on the by-document dev half by more than this: vetoed


def unseen_veto(candidate: float, bare: float, start: float, reduced: bool) -> bool:
    """Whether a candidate's by-document dev nDCG@10 (queries whose documents training never saw) rules it out.

    Reduced models (issue 13): below the bare encoder by more than ``UNSEEN_TOLERANCE``, and below the start it
    would fall back to by more than that too (a PCA start is itself below the bare encoder there, by 0.05 on
    SciFact at 128 dimensions: vetoing everything in favour of it would protect nothing). Full width: no veto here;
    ``--unseen-veto`` adds the noise-aware per-query rule (``unseen_vetoes``) for every model.
    """
    if not reduced or math.isnan(candidate):
        return False
    return candidate < min(bare, start) - UNSEEN_TOLERANCE


@dataclass
class TrainSummary:
    output_dir: str
    data_name: str
    num_pairs: int
    num_train_queries: int
    num_dev_queries: int
    encoder: str
    encoder_calls: int  # texts the frozen encoder embedded in this run (the rest came from the cache)
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
    loss: str = "mnrl"
    given_negatives: bool = False
    placement: str = "query"
    out_features: int | None = None
    in_features: int | None = None
    base_dev_unseen: float | None = None  # by-document dev half, bare encoder
    start_dev: dict[str, float] = field(default_factory=dict)  # the untrained start (PCA for a reduced head)
    trained_dev_unseen: float | None = None
    full_width_dev: dict[str, float] = field(default_factory=dict)  # distill: the full-width teacher, same dev
    vetoes: list[str] = field(default_factory=list)  # candidates the by-document dev half ruled out
    distill_epochs: int | None = None  # distill: the student's epochs, chosen on dev
    distill_seconds: float | None = None
    pseudo_queries: int | None = None  # distill: pseudo-queries (sentences of documents) distilled beside them
    pseudo_source: str = ""  # what those pseudo-queries are (--pseudo-sentences)
    hard_negatives: str = ""  # how they were drawn, or empty when off
    hybrid: dict = field(default_factory=dict)  # hybrid.json: the fusion weight with BM25 chosen on dev
    anchor: str = ""  # --anchor-weight: the pseudo-queries' KL term, or empty when off
    selection: str = ""  # how the setting was chosen when more than one carve or a veto was involved
    average_carves: list[dict] = field(default_factory=list)  # --average-carves: each run's carve and choice


class CollapseError(RuntimeError):
    """Every trial was stopped by the collapse guard; the message says why and what to change."""


@dataclass
class Prepared:
    """Everything the trials share, built once: the model, its cached twin, the rows, the dev side."""

    model: SentenceTransformer
    encoder: SentenceTransformer
    head: Any  # what trains: the head, or the Router holding both maps of a ``routes`` model
    cache: EmbeddingCache
    twin: SentenceTransformer
    dataset: Any
    evaluator: Any
    guard_pairs: tuple[list, list]
    start_state: dict
    base_dev: dict[str, float]
    unseen_evaluator: Any = None  # the by-document half of dev alone (None when dev has no such queries)
    base_dev_unseen: float = float("nan")
    start_dev: dict[str, float] = field(default_factory=dict)
    start_dev_unseen: float = float("nan")
    init: str = "identity"  # how the start was made: identity (full width) or pca (reduced)
    reduced: bool = False
    anchor: Any = None  # --anchor-weight: the pseudo-queries' KL term added to each trial's loss (anchor.py)


@dataclass
class Choice:
    """What selection on dev kept: the grid trial, the interpolation toward it, or the identity."""

    index: int
    result: TrialResult
    state: dict
    interpolation: float
    kept_identity: bool
    trained_dev: dict[str, float] = field(default_factory=dict)
    trained_dev_unseen: float = float("nan")
    vetoes: list[str] = field(default_factory=list)
    selection: str = ""


def is_main_process() -> bool:
    """Rank 0 under torchrun, or the only process: the one that logs and saves."""
    return int(os.environ.get("RANK", "0")) == 0


def interpolate(start: dict, end: dict, t: float) -> dict:
    return {key: start[key] + t * (end[key] - start[key]) if end[key].is_floating_point() else end[key] for key in end}


def trials_dir(settings: TrainSettings) -> Path:
    return Path(settings.output_dir) / "trials"


def prepare(data: TrainingData, settings: TrainSettings, model_card_data=None) -> Prepared:
    """Encoder, head, cache (filled once), the training rows and the dev evaluator; the bare encoder's dev score."""
    torch.manual_seed(settings.seed)
    encoder = load_encoder(settings.encoder)
    head_kwargs = {"init": settings.init} if settings.init else {}
    model = build_model(
        encoder,
        kind=settings.kind,
        placement=settings.layout,
        out_features=settings.out_features,
        seed=settings.seed,
        model_card_data=model_card_data,
        **head_kwargs,
    )
    # The card's widget examples would run the full model (encoder included) on training texts: skip them.
    model.model_card_data.generate_widget_examples = False
    layout = ModelLayout.of(model)
    cache = EmbeddingCache(
        prefix_model(model),
        root=settings.cache_dir,
        storage=settings.cache_storage,
        show_progress_bar=settings.show_progress,
    )
    queries, documents = data.all_texts()
    # Under torchrun every rank encodes its share of the missing texts, then reads all (modeling/cache/distributed.py).
    cache.ensure(queries + documents, description="Embedding training and dev texts")
    for head in layout.heads:
        if head.out_features < head.in_features and head.init != "default":
            head.fit_pca(cache.get(documents[:20000]))
    if settings.placement == "fixed-documents":
        layout.document_head.requires_grad_(False)  # documents keep the PCA start: only queries move
    trained = layout.container if settings.layout == "routes" else layout.head
    twin = cached_twin(model, cache)
    if settings.negative_guard == "gist":
        base_guide(twin, encoder)  # the GIST loss's guide: the frozen base over the twin's cached input
    prepared = Prepared(
        model, encoder, trained, cache, twin, None, None, ([], []), head_state(trained), {}, init=layout.head.init,
        reduced=layout.head.out_features < layout.head.in_features,
    )  # fmt: skip
    prepared.anchor = build_anchor(settings, data, cache, layout)
    prepared = with_split(prepared, settings, data)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if len(prepared.dataset) < settings.batch_size * world_size:
        raise ValueError(
            f"Only {len(prepared.dataset)} training rows for a batch of {settings.batch_size} x {world_size} "
            f"process(es): not one full batch. Lower --batch-size to at most {max(2, len(prepared.dataset) // world_size)}."
        )
    return prepared


def corpus_sample(corpus: list[str], seed: int) -> list[str]:
    """The documents the pseudo-queries and distillation rank against: all, or a seeded ``DISTILL_DOCUMENTS``."""
    return corpus if len(corpus) <= DISTILL_DOCUMENTS else random.Random(seed).sample(corpus, DISTILL_DOCUMENTS)


def pseudo_query_embeddings(cache: EmbeddingCache, corpus: list[str], settings: TrainSettings):
    """Pre-head embeddings of up to ``--pseudo-queries`` sentences of ``corpus`` (``--pseudo-sentences`` per document),
    embedded once through the cache; None when there are none."""
    texts = (
        pseudo_queries(corpus, settings.pseudo_queries, seed=settings.seed, per_document=settings.pseudo_sentences)
        if settings.pseudo_queries
        else []
    )
    if not texts:
        return None
    cache.ensure(texts, description="Embedding pseudo-queries (sentences of documents)")
    logger.info("%d pseudo-queries (%s)", len(texts), pseudo_description(settings.pseudo_sentences))
    return cache.get(texts)


def build_anchor(settings: TrainSettings, data: TrainingData, cache: EmbeddingCache, layout: ModelLayout):
    """``--anchor-weight`` > 0 and a full-width query-only head: the pseudo-queries (embedded once through the
    cache) and the documents they are ranked against (a seeded sample of ``DISTILL_DOCUMENTS`` for a larger
    corpus). None otherwise."""
    from modeling.training.anchor import Anchor

    if settings.anchor_weight <= 0 or settings.layout != "query" or layout.head.out_features != layout.head.in_features:
        return None
    pseudo = pseudo_query_embeddings(cache, data.corpus, settings)
    if pseudo is None:
        return None
    documents = cache.get(corpus_sample(data.corpus, settings.seed))
    anchor = Anchor(pseudo, documents, layout.head, settings.anchor_weight, seed=settings.seed,
                    source=pseudo_description(settings.pseudo_sentences))  # fmt: skip
    logger.info("anchor: %s", anchor.describe())
    return anchor


def with_split(prepared: Prepared, settings: TrainSettings, data: TrainingData) -> Prepared:
    """``prepared``'s model and cache with ``data``'s training rows and dev side (another carve's, for
    ``--average-carves``); the bare encoder and the start scored on that dev split."""
    dataset = training_dataset(data, settings.loss, settings.negatives(), prepared.twin, seed=settings.seed)
    evaluator = dev_evaluator(data.dev_queries, data.dev_corpus, data.dev_relevant)
    unseen = unseen_evaluator(data)
    guard_pairs = probe_pairs(data.dev_queries, data.dev_corpus, data.dev_relevant, seed=settings.seed)
    bare = cached_twin(prepared.encoder, prepared.cache)
    prepared.head.load_state_dict(prepared.start_state)
    return replace(
        prepared, dataset=dataset, evaluator=evaluator, guard_pairs=guard_pairs,
        base_dev=dev_metrics(evaluator, bare),  # the bare encoder, from the same cache
        unseen_evaluator=unseen, base_dev_unseen=unseen_score(unseen, bare),
        start_dev=dev_metrics(evaluator, prepared.twin), start_dev_unseen=unseen_score(unseen, prepared.twin),
    )  # fmt: skip


def unseen_evaluator(data: TrainingData):
    """The dev evaluator on the by-document half of dev only (queries whose documents training never saw)."""
    queries = {qid: text for qid, text in data.dev_queries.items() if qid in data.dev_unseen}
    if not queries:
        return None
    relevant = {qid: docs for qid, docs in data.dev_relevant.items() if qid in queries}
    return dev_evaluator(queries, data.dev_corpus, relevant)


def unseen_score(evaluator, model) -> float:
    return float("nan") if evaluator is None else dev_metrics(evaluator, model)[SELECTION_METRIC]


def run_grid(
    prepared: Prepared, settings: TrainSettings, grid: list[Trial], folder: Path | None = None
) -> tuple[list[TrialResult], list[dict]]:
    """Train every grid point from the start state; returns each trial's result and its kept head weights."""
    folder = folder or trials_dir(settings)
    results, states = [], []
    for trial in grid:
        prepared.head.load_state_dict(prepared.start_state)
        result = run_trial(
            prepared.twin, prepared.head, prepared.dataset, prepared.evaluator, prepared.guard_pairs,
            settings, trial, folder / trial.name, anchor=prepared.anchor,
        )  # fmt: skip
        results.append(result)
        states.append(head_state(prepared.head))
        epoch = "-" if result.best_epoch is None else f"{result.best_epoch:.0f}"
        logger.info(
            "learning rate %g, weight decay %g: best dev nDCG@10 %.4f at epoch %s; guard %s",
            trial.learning_rate, trial.weight_decay, result.best_dev, epoch, result.guard,
        )  # fmt: skip
    return results, states


def unseen_dev_scores(prepared: Prepared, data: TrainingData, state: dict) -> list[float]:
    """Per-query dev nDCG@10 of the head in ``state`` on the by-document half of dev (documents training never saw)."""
    from modeling.evaluation.metrics import MAIN_METRIC, per_query_metrics
    from modeling.training.hybrid import dense_run

    qids = sorted(data.dev_unseen)
    prepared.head.load_state_dict(state)
    run = dense_run(prepared.twin, {q: data.dev_queries[q] for q in qids}, data.dev_corpus)
    scored = per_query_metrics({q: {doc: 1 for doc in data.dev_relevant[q]} for q in qids}, run)
    return [scored[q][MAIN_METRIC] for q in qids]


def unseen_vetoes(prepared: Prepared, data: TrainingData, states: list[dict], candidates: list[int]) -> set[int]:
    """Trials below the bare encoder on the unseen-document half of dev beyond noise (1.64 standard errors of the
    per-query difference): kept from being chosen for gains that are only memorised training documents."""
    if not data.dev_unseen:
        return set()
    base = unseen_dev_scores(prepared, data, prepared.start_state)  # the identity head: the bare encoder
    return {i for i in candidates if vetoed(unseen_dev_scores(prepared, data, states[i]), base)}


def pool_carves(
    prepared: Prepared, settings: TrainSettings, data: TrainingData, results: list[TrialResult]
) -> PooledChoice | None:
    """Run the grid on ``settings.selection_carves - 1`` more carves of the training queries and pick the (learning
    rate, decay, epoch) with the best dev nDCG@10 averaged over all carves. None for a given dev split."""
    if settings.selection_carves <= 1 or not data.dev_carved:
        return None
    histories = {(r.learning_rate, r.weight_decay): [r.dev_history] for r in results if not r.stopped}
    for seed in carve_seeds(settings.seed, settings.selection_carves)[1:]:
        split = with_split(prepared, settings, recarve(data, settings.dev_fraction, seed))
        carve_results, _ = run_grid(split, settings, settings.grid(), trials_dir(settings) / f"carve-{seed}")
        for trial, result in zip(settings.grid(), carve_results):
            key = (trial.learning_rate, trial.weight_decay)
            if key in histories and not result.stopped:
                histories[key].append(result.dev_history)
            else:
                histories.pop(key, None)
    histories = {key: curves for key, curves in histories.items() if len(curves) == settings.selection_carves}
    if not histories:
        return None
    pooled = pooled_choice(histories)
    logger.info(
        "dev nDCG@10 averaged over %d carves: learning rate %g, weight decay %g, epoch %g (mean %.4f; per carve %s)",
        settings.selection_carves, *pooled.key, pooled.epoch, pooled.mean_dev,
        ", ".join(f"{v:.4f}" for v in pooled.per_carve),
    )  # fmt: skip
    return pooled


def choose_interpolation(head, start: dict, end: dict, evaluator, twin) -> tuple[float, float]:
    """The largest interpolation weight whose dev nDCG@10 is within ``DEV_NOISE`` of the best."""
    scores = {}
    for t in INTERPOLATIONS:
        head.load_state_dict(interpolate(start, end, t))
        scores[t] = dev_metrics(evaluator, twin)[SELECTION_METRIC]
    top = max(scores.values())
    best = max(t for t in INTERPOLATIONS if scores[t] >= top - DEV_NOISE)
    logger.info(
        "dev nDCG@10 by interpolation toward the trained head: %s",
        ", ".join(f"{t:g}: {v:.4f}" for t, v in scores.items()),
    )
    return best, scores[best]


def vetoed_state(prepared: Prepared, state: dict, label: str, vetoes: list[str]) -> tuple[bool, float]:
    """Load ``state`` and score it on the by-document dev half; whether ``unseen_veto`` rules it out."""
    prepared.head.load_state_dict(state)
    score = unseen_score(prepared.unseen_evaluator, prepared.twin)
    veto = unseen_veto(score, prepared.base_dev_unseen, prepared.start_dev_unseen, prepared.reduced)
    if veto:
        vetoes.append(
            f"{label}: by-document dev nDCG@10 {score:.4f} vs bare encoder {prepared.base_dev_unseen:.4f}, "
            f"start {prepared.start_dev_unseen:.4f}"
        )
        logger.info("vetoed %s", vetoes[-1])
    return veto, score


def choose(
    prepared: Prepared, settings: TrainSettings, results: list[TrialResult], states: list[dict],
    data: TrainingData | None = None, pooled: PooledChoice | None = None,
) -> Choice:  # fmt: skip
    """The best usable trial on dev, its interpolation, or the start when nothing beats it.

    With ``pooled`` (``--selection-carves`` > 1) the pooled trial and epoch come first. With ``--unseen-veto`` trials
    below the bare encoder on the by-document half of dev beyond 1.64 standard errors are passed over.

    Trials are tried best dev first; one whose by-document dev half ``unseen_veto`` rules out is passed over (for
    a reduced model also each smaller interpolation toward its start is tried first). The start (identity, or PCA
    for a reduced head) stays a candidate. Leaves the chosen head in ``prepared.head`` and records its dev metrics
    (before any refit: an honest figure).
    """
    usable = [i for i, r in enumerate(results) if not r.stopped and not math.isnan(r.best_dev)]
    if not usable:
        reasons = "\n".join(f"- lr {r.learning_rate:g}, weight decay {r.weight_decay:g}: {r.guard}" for r in results)
        raise CollapseError(f"Every training run was stopped by the collapse guard:\n{reasons}")
    notes: list[str] = []
    ruled_out = unseen_vetoes(prepared, data, states, usable) if data is not None and settings.unseen_veto else set()
    if ruled_out:
        names = ", ".join(f"lr {results[i].learning_rate:g} wd {results[i].weight_decay:g}" for i in sorted(ruled_out))
        notes.append(f"vetoed (below the bare encoder on unseen-document dev queries beyond 1.64 SE): {names}")
        logger.info(notes[-1])
    allowed = [i for i in usable if i not in ruled_out]
    order = sorted(allowed, key=lambda i: -results[i].best_dev)
    pooled_index = None
    if pooled is not None:
        pooled_index = next(
            (i for i in allowed if (results[i].learning_rate, results[i].weight_decay) == pooled.key), None
        )
        if pooled_index is not None:
            order.remove(pooled_index)
            order.insert(0, pooled_index)
            notes.append(
                f"setting and epoch chosen by dev nDCG@10 averaged over {len(pooled.per_carve)} carves "
                f"({pooled.mean_dev:.4f}; per carve " + ", ".join(f"{v:.4f}" for v in pooled.per_carve) + ")"
            )
    selection = "; ".join(notes)
    head, start = prepared.head, prepared.start_state
    has_start = prepared.init in ("identity", "pca")
    floor = prepared.base_dev if prepared.init == "identity" else prepared.start_dev
    vetoes: list[str] = []
    for index in order:
        result = replace(results[index], best_epoch=pooled.epoch) if index == pooled_index else results[index]
        interpolation, best_dev = 1.0, results[index].best_dev
        if settings.interpolate and has_start:
            interpolation, best_dev = choose_interpolation(
                head, start, states[index], prepared.evaluator, prepared.twin
            )
        if has_start and best_dev <= floor[SELECTION_METRIC]:
            break  # the best unvetoed trial does not beat the start on dev: keep the start
        weights = [interpolation] + ([t for t in INTERPOLATIONS if t < interpolation] if prepared.reduced else [])
        for t in weights:
            veto, unseen = vetoed_state(
                prepared, interpolate(start, states[index], t), f"{settings.grid()[index].name} at {t:g}", vetoes
            )
            if not veto:
                trained_dev = dev_metrics(prepared.evaluator, prepared.twin)
                return Choice(index, result, states[index], t, False, trained_dev, unseen, vetoes, selection)
    candidates = allowed or usable
    if not has_start:  # a random start is no candidate: keep the best trial as it is
        index = max(candidates, key=lambda i: results[i].best_dev)
        head.load_state_dict(states[index])
        unseen = unseen_score(prepared.unseen_evaluator, prepared.twin)
        return Choice(index, results[index], states[index], 1.0, False, dev_metrics(prepared.evaluator, prepared.twin),
                      unseen, vetoes, selection)  # fmt: skip
    head.load_state_dict(start)
    index = max(candidates, key=lambda i: results[i].best_dev)
    trained_dev = dev_metrics(prepared.evaluator, prepared.twin)
    return Choice(
        index, results[index], states[index], 0.0, True, trained_dev, prepared.start_dev_unseen, vetoes, selection
    )


def choose_fusion(twin: SentenceTransformer, data: TrainingData) -> HybridChoice | None:
    """The convex weight of this model + BM25 on the dev split, with the chosen head (before any refit, like the
    other dev choices). None when dev has no judged query."""
    origin = "carved from the training queries" if data.dev_carved else "the data's dev split"
    source = f"dev split of training ({len(data.dev_queries)} queries, {origin})"
    try:
        choice = choose_hybrid(twin, data.dev_queries, data.dev_corpus, data.dev_relevant, source)
    except ValueError as error:
        logger.info("no hybrid weight chosen: %s", error)
        return None
    logger.info(
        "hybrid with BM25: %s scores, dense weight %g chosen on dev (nDCG@10 %.4f; best %g, one standard error %.4f)",
        choice.normalisation, choice.dense_weight, choice.dev_ndcg, choice.best_weight, choice.standard_error,
    )  # fmt: skip
    return choice


def refit(
    prepared: Prepared, settings: TrainSettings, data: TrainingData, choice: Choice, folder: Path | None = None
) -> bool:
    """When dev was carved from the training data: train once more on all of it with the chosen settings, for the
    chosen number of epochs of the same schedule, then apply the chosen interpolation. Returns whether it ran."""
    best = choice.result
    if not (settings.refit and data.dev_carved and not choice.kept_identity and best.best_epoch is not None):
        return False
    head, start = prepared.head, prepared.start_state
    head.load_state_dict(start)
    trial = Trial(best.learning_rate, best.weight_decay, stop_after_epoch=math.ceil(best.best_epoch))
    full = training_dataset(data.with_dev_merged(), settings.loss, settings.negatives(), prepared.twin, settings.seed)
    result = run_trial(
        prepared.twin, head, full, prepared.evaluator, prepared.guard_pairs, settings, trial,
        (folder or trials_dir(settings)) / trial.name, anchor=prepared.anchor,
    )  # fmt: skip
    if result.stopped:
        raise CollapseError(f"The final refit on all the data was stopped by the collapse guard: {result.guard}")
    head.load_state_dict(interpolate(start, head_state(head), choice.interpolation))
    logger.info(
        "refit on train + dev for %d epochs at learning rate %g, weight decay %g",
        trial.stop_after_epoch, best.learning_rate, best.weight_decay,
    )  # fmt: skip
    return True


def carve_record(seed: int, choice: Choice) -> dict:
    """What one run of ``--average-carves`` chose on its carve's dev split (before its refit)."""
    kept = choice.kept_identity
    return {
        "seed": seed,
        "learning_rate": None if kept else choice.result.learning_rate,
        "weight_decay": None if kept else choice.result.weight_decay,
        "epoch": None if kept else choice.result.best_epoch,
        "interpolation": 0.0 if kept else choice.interpolation,
        "dev_ndcg@10": choice.trained_dev.get(SELECTION_METRIC),
        "dev_unseen_ndcg@10": _finite(choice.trained_dev_unseen),
    }


def mean_state(states: list[dict]) -> dict:
    """The element-wise mean of float weights; a weight every state holds identically (a frozen map, a count) is
    kept as it is, bit for bit."""
    first = states[0]
    return {
        key: first[key]
        if not first[key].is_floating_point() or all(torch.equal(s[key], first[key]) for s in states[1:])
        else sum(s[key] for s in states) / len(states)
        for key in first
    }


def average_carves(
    prepared: Prepared, settings: TrainSettings, data: TrainingData, choice: Choice, hybrid: HybridChoice | None,
    pool_fusion: bool = True, on_chosen: Callable[[Prepared, TrainSettings, TrainingData], Any] | None = None,
) -> tuple[list[dict], HybridChoice | None]:  # fmt: skip
    """``--average-carves K``: the job (grid, choice on dev, refit) K - 1 more times, each on its own dev carve and
    seed, then the mean of the K heads' weights in ``prepared.head`` (the first is the head already there).

    Why: one carve's 81 dev queries choose the epoch and setting with a standard error of 0.03, and which training
    documents the head learns to favour depends on the carve and the batch order; the mean of heads that each fit
    all the data keeps what the runs agree on and averages out the rest (a model soup, Wortsman et al. 2022: the
    heads share their identity start, so their weights average like their predictions). The hybrid weight is
    chosen once on every carve's dev queries together (``pool_hybrid``). ``on_chosen(split, settings, carve)`` runs
    after each further carve's choice, before its refit (a distilled student's curve). Returns (each run's choice,
    the hybrid).
    """
    if settings.average_carves <= 1:
        return [], hybrid
    seeds = carve_seeds(settings.seed, settings.average_carves)
    states, records = [head_state(prepared.head)], [carve_record(seeds[0], choice)]
    fusions = [hybrid] if hybrid is not None and pool_fusion else []
    for seed in seeds[1:]:
        carve = recarve(data, settings.dev_fraction, seed) if data.dev_carved else data
        carve_settings = replace(settings, seed=seed)
        folder = trials_dir(settings) / f"average-{seed}"
        split = with_split(prepared, carve_settings, carve)
        results, trial_states = run_grid(split, carve_settings, settings.grid(), folder)
        carve_choice = choose(split, carve_settings, results, trial_states, carve)
        if on_chosen is not None:
            on_chosen(split, carve_settings, carve)
        if fusions and (fusion := choose_fusion(split.twin, carve)) is not None:
            fusions.append(fusion)
        refit(split, carve_settings, carve, carve_choice, folder)
        states.append(head_state(prepared.head))
        records.append(carve_record(seed, carve_choice))
        logger.info("average of carves: run %d of %d (carve %d) done", len(states), len(seeds), seed)
    prepared.head.load_state_dict(mean_state(states))
    if len(fusions) == len(seeds):
        hybrid = pooled_fusion(fusions, data.dev_carved, "the head chosen on its own split")
    return records, hybrid


def pooled_fusion(fusions: list[HybridChoice], carved: bool, scored_with: str) -> HybridChoice:
    """One hybrid choice from every carve's dev queries together (``pool_hybrid``), saying where it came from."""
    queries = sum(fusion.num_queries for fusion in fusions)
    kind = "carves of the training queries" if carved else "seeds on the data's dev split"
    return pool_hybrid(
        fusions, f"dev splits of {len(fusions)} {kind} ({queries} queries, each scored with {scored_with})"
    )


@dataclass
class Student:
    """The reduced ``routes`` model of ``--placement distill`` and what its selection found."""

    model: SentenceTransformer
    twin: SentenceTransformer
    container: nn.Module  # the Router holding both maps: what trains
    start_state: dict
    epochs: int = 0
    dev: dict[str, float] = field(default_factory=dict)
    dev_unseen: float = float("nan")
    vetoes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    start_dev: dict[str, float] = field(default_factory=dict)
    pseudo: Any = None  # pre-head embeddings of the pseudo-queries (None: --pseudo-queries 0)
    curves: list[StudentCurve] = field(default_factory=list)  # one per carve, the first from the data's own carve


@dataclass
class StudentCurve:
    """One carve's dev scores of the student at each distillation epoch (index 0: the start, documents at PCA and
    queries at the teacher projected by it), its teacher the head chosen on that carve."""

    dev: list[dict[str, float]]
    unseen: list[float]
    base_unseen: float
    states: list[dict] = field(default_factory=list, repr=False)  # the maps at each epoch (0: the start)
    carve: Any = None  # the carve's TrainingData: its dev split scores the student's hybrid weight


def build_student(prepared: Prepared, settings: TrainSettings, data: TrainingData, model_card_data=None) -> Student:
    """The reduced model: a query map and a document map, both at PCA of the corpus until ``run_distillation``
    starts the query map at the teacher."""
    head_kwargs = {"init": settings.init} if settings.init else {}
    model = build_model(
        prepared.encoder, kind=settings.kind, placement="routes", out_features=settings.out_features,
        seed=settings.seed, model_card_data=model_card_data, **head_kwargs,
    )  # fmt: skip
    model.model_card_data.generate_widget_examples = False
    layout = ModelLayout.of(model)
    sample = prepared.cache.get(data.corpus[:20000])
    for head in layout.heads:
        if head.out_features < head.in_features and head.init != "default":
            head.fit_pca(sample)
    if settings.placement == "distill-queries":
        layout.document_head.requires_grad_(False)  # documents keep the PCA start: only the query map learns
    student = Student(model, cached_twin(model, prepared.cache), layout.container, head_state(layout.container))
    student.pseudo = pseudo_query_embeddings(prepared.cache, data.corpus, settings)
    return student


def teacher_function(head: nn.Module):
    """The full-width query head as a function of pre-head embeddings (a frozen copy: the refit moves the original)."""
    frozen = copy.deepcopy(head).eval().requires_grad_(False)
    return lambda x: frozen({"sentence_embedding": x})["sentence_embedding"]


def run_distillation(prepared: Prepared, student: Student, settings: TrainSettings, data: TrainingData, teacher,
                     epochs: int) -> DistillResult:  # fmt: skip
    """Distil ``teacher`` into the student from its start, on ``data``'s training queries and the whole corpus."""
    layout = ModelLayout.of(student.model)
    student.container.load_state_dict(student.start_state)
    corpus = corpus_sample(data.corpus, settings.seed)
    pseudo = None
    if student.pseudo is not None:
        # --pseudo-scorer: the teacher learned from queries about training documents; the bare encoder judges every
        # document's own first sentence alike, and led for both losses on outer dev carves (README, "Reduced models")
        scorer = teacher if settings.pseudo_scorer == "teacher" else (lambda x: x)
        pseudo = PseudoQueries(student.pseudo, scorer, weight=settings.pseudo_weight)
    queries = prepared.cache.get(list(data.pairs))
    if settings.placement == "distill":  # distill-queries keeps its queries' PCA start, as fixed-documents does
        start_at_teacher(layout.head, layout.document_head, teacher,
                         queries if student.pseudo is None else torch.cat([queries, student.pseudo]))  # fmt: skip
    return distill(
        student.container, layout.head, layout.document_head, teacher,
        queries=queries, documents=prepared.cache.get(corpus), epochs=epochs,
        batch_size=settings.batch_size, scale=settings.scale, seed=settings.seed, pseudo=pseudo,
    )  # fmt: skip


def student_curve(prepared: Prepared, student: Student, settings: TrainSettings, data: TrainingData) -> None:
    """Distil ``prepared.head`` (the head chosen on ``data``'s carve) into the student from its start and score
    every epoch on that carve's dev split (all of it, and its by-document half); appends the curve to
    ``student.curves`` with the epochs' states. Leaves the student at its start."""
    result = run_distillation(prepared, student, settings, data, teacher_function(prepared.head), settings.epochs)
    states, dev, unseen = [result.start, *result.states], [], []
    for state in states:
        student.container.load_state_dict(state)
        dev.append(dev_metrics(prepared.evaluator, student.twin))
        unseen.append(unseen_score(prepared.unseen_evaluator, student.twin))
    student.container.load_state_dict(student.start_state)
    student.curves.append(StudentCurve(dev, unseen, prepared.base_dev_unseen, states, data))
    student.seconds += result.seconds


def choose_student(student: Student) -> None:
    """The epoch with the best dev nDCG@10 pooled over the carves' curves (the mean over carves, each scored with
    the student of its own teacher) among those ``unseen_veto`` lets through on the pooled by-document half; the
    untrained start (epoch 0) stays a candidate (epochs that do not beat it are not taken).

    Why pooled: one carve's 81 dev queries (40 by document) chose the epoch with a standard error of 0.03, and on
    SciFact they stopped some seeds' students at epoch 3 or 4 (test nDCG@10 0.75-0.77 against 0.82 at epoch 19);
    the teacher is already the mean of the carves' heads, so its student is chosen on all their dev queries.
    Leaves the first carve's maps at the chosen epoch in the student, and its dev figures in ``dev``."""
    curves, epochs = student.curves, len(student.curves[0].dev)
    metric = [statistics.fmean([c.dev[e][SELECTION_METRIC] for c in curves]) for e in range(epochs)]
    unseen = [statistics.fmean([c.unseen[e] for c in curves]) for e in range(epochs)]
    base = statistics.fmean([c.base_unseen for c in curves])
    pooled_over = f"pooled over {len(curves)} carves" if len(curves) > 1 else "dev"
    first = curves[0]
    student.epochs, student.start_dev = 0, first.dev[0]
    for epoch in sorted(range(1, epochs), key=lambda e: (-metric[e], e)):
        if metric[epoch] <= metric[0]:
            break
        if unseen_veto(unseen[epoch], base, unseen[0], reduced=True):
            student.vetoes.append(
                f"distillation epoch {epoch}: by-document dev nDCG@10 {unseen[epoch]:.4f} vs bare encoder "
                f"{base:.4f}, start {unseen[0]:.4f} ({pooled_over})"
            )
            continue
        student.epochs = epoch
        break
    student.dev, student.dev_unseen = first.dev[student.epochs], first.unseen[student.epochs]
    student.container.load_state_dict(first.states[student.epochs])
    logger.info(
        "distillation: epoch %d chosen, dev nDCG@10 %.4f (start %.4f; %s), by-document half %.4f",
        student.epochs, metric[student.epochs], metric[0], pooled_over, unseen[student.epochs],
    )  # fmt: skip


def start_student(prepared: Prepared, settings: TrainSettings, data: TrainingData, model_card_data=None) -> Student:
    """``--placement distill``: the student and its curve on the data's own carve, the teacher the head chosen
    there (``prepared.head`` after ``choose``, trained on the training queries only, so the epochs are scored on a
    dev split the teacher never saw). ``--average-carves`` adds the other carves' curves; ``choose_student`` then
    picks the epoch."""
    student = build_student(prepared, settings, data, model_card_data)
    student_curve(prepared, student, settings, data)
    return student


def student_fusion(student: Student) -> HybridChoice | None:
    """The student's hybrid weight, chosen on every carve's dev queries together (``pool_hybrid``), each carve's
    queries scored by that carve's student at the chosen epoch, as the full-width head's is (``average_carves``).
    Why: chosen on the first carve's 81 dev queries, the normalisation flipped between min-max and z-score from
    one seed to the next (README, "Reduced models"). Leaves the first carve's maps at the chosen epoch in place."""
    fusions = []
    for curve in student.curves:
        student.container.load_state_dict(curve.states[student.epochs])
        fusions.append(choose_fusion(student.twin, curve.carve))
    student.container.load_state_dict(student.curves[0].states[student.epochs])
    if any(fusion is None for fusion in fusions) or len(fusions) == 1:
        return fusions[0]
    return pooled_fusion(fusions, student.curves[0].carve.dev_carved, "the student of the head chosen on its own split")


def refit_student(prepared: Prepared, settings: TrainSettings, data: TrainingData, student: Student,
                  refitted: bool) -> None:  # fmt: skip
    """After the teacher's refit on train + dev: distil it again, on all the queries, for the chosen epochs (0: the
    start projected from the refit teacher)."""
    if not refitted:
        return
    result = run_distillation(
        prepared, student, settings, data.with_dev_merged(), teacher_function(prepared.head), student.epochs
    )
    student.seconds += result.seconds


def summarize(
    data: TrainingData, settings: TrainSettings, prepared: Prepared, results: list[TrialResult], choice: Choice,
    refitted: bool, started: float, hybrid: HybridChoice | None = None,
) -> TrainSummary:  # fmt: skip
    kept = choice.kept_identity
    return TrainSummary(
        output_dir=str(settings.output_dir),
        data_name=data.name,
        num_pairs=data.num_pairs,
        num_train_queries=len(data.pairs),
        num_dev_queries=len(data.dev_queries),
        encoder=encoder_display_name(settings.encoder),
        encoder_calls=prepared.cache.encoded_texts,
        cached_texts=len(prepared.cache),
        base_dev=prepared.base_dev,
        trained_dev=choice.trained_dev,
        chosen_learning_rate=None if kept else choice.result.learning_rate,
        chosen_epoch=None if kept else choice.result.best_epoch,
        chosen_weight_decay=None if kept else choice.result.weight_decay,
        trials=[asdict(r) for r in results],
        guard=choice.result.guard,
        kept_identity=kept,
        interpolation=0.0 if kept else choice.interpolation,
        refit_on_dev=refitted,
        seconds=time.time() - started,
        loss=settings.loss,
        given_negatives=any(data.negatives.values()),
        placement=settings.placement,
        out_features=settings.out_features,
        in_features=prepared.encoder.get_embedding_dimension(),
        base_dev_unseen=_finite(prepared.base_dev_unseen),
        start_dev=prepared.start_dev if prepared.reduced else {},
        trained_dev_unseen=_finite(choice.trained_dev_unseen),
        vetoes=choice.vetoes,
        hard_negatives=""
        if settings.negatives() is None
        else settings.negatives().describe()
        + (
            f"; GISTEmbedLoss guide: the frozen base, margin {settings.negative_margin:g}"
            if settings.negative_guard == "gist"
            else ""
        ),
        hybrid={} if hybrid is None else hybrid.to_json(),
        selection=choice.selection,
        anchor="" if prepared.anchor is None else prepared.anchor.describe(),
    )


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def save(
    model: SentenceTransformer,
    summary: TrainSummary,
    output_dir: Path,
    extra: Callable[[Path], None] | None = None,
    fmt: str = "custom",
) -> None:
    """Write the model, its summary and plots into a staging folder, then swap it in for ``output_dir``.

    ``extra(folder)`` writes further artifacts next to the model before the swap. ``fmt="stock"`` saves the head as
    the library's own ``Dense`` (``modeling.model.stock``), loadable without ``trust_remote_code``.
    """
    from modeling.evaluation.plots import plot_dev_curves

    staging = staging_dir(output_dir)
    try:
        if fmt == "stock":
            from modeling.model.stock import export_stock

            export_stock(model, staging)
        else:
            save_model(model, staging)
        (staging / "training_summary.json").write_text(json.dumps(asdict(summary), indent=2))
        plots = staging / "evaluation"
        plots.mkdir(exist_ok=True)
        plot_dev_curves(summary.trials, summary.base_dev[SELECTION_METRIC], plots / "training-dev-curves.png")
        if summary.hybrid:
            save_hybrid(summary.hybrid, staging)
        if extra is not None:
            extra(staging)
        swap_in(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train(
    data: TrainingData,
    settings: TrainSettings,
    model_card_data=None,
    fill_card: Callable[[SentenceTransformer, TrainSummary, TrialLog], None] | None = None,
    save_extra: Callable[[Path], None] | None = None,
) -> TrainSummary:
    """Run the job and save the model to ``settings.output_dir``.

    ``model_card_data`` is given to the model at construction (the trainer's card callback fills it);
    ``fill_card(model, summary, chosen_trial_log)`` completes it just before saving; ``save_extra(folder)`` writes
    further artifacts next to the model (inside the folder that is swapped in).
    """
    if settings.loss not in LOSSES:
        raise ValueError(f"Unknown loss {settings.loss!r}; choose one of {tuple(LOSSES)}.")
    started = time.time()
    check_output_dir(settings.output_dir)
    trials = trials_dir(settings)
    identity = run_identity(data, settings)
    if is_main_process() and not settings.resume:
        shutil.rmtree(trials, ignore_errors=True)  # a fresh run: no trial of an earlier run may be reused
    check_and_record(trials, identity, settings.resume, write=is_main_process())
    distilling = settings.placement in DISTILL_PLACEMENTS
    # distill: the grid trains the full-width query-only teacher; the reduced student comes after it.
    # The teacher's --anchor-weight defaults to 0 (settings): the student has its own pseudo-query term.
    grid_settings = replace(settings, placement="query", out_features=None, init=None) if distilling else settings
    prepared = prepare(data, grid_settings, None if distilling else model_card_data)
    results, states = run_grid(prepared, grid_settings, settings.grid())
    pooled = pool_carves(prepared, grid_settings, data, results)
    choice = choose(prepared, grid_settings, results, states, data, pooled)
    student = start_student(prepared, settings, data, model_card_data) if distilling else None
    hybrid = None if distilling else choose_fusion(prepared.twin, data)
    refitted = refit(prepared, grid_settings, data, choice)
    on_chosen = None
    if student is not None:  # each further carve's teacher gets its own student curve on that carve's dev

        def on_chosen(split, carve_settings, carve):
            student_curve(split, student, replace(settings, seed=carve_settings.seed), carve)

    runs, hybrid = average_carves(prepared, grid_settings, data, choice, hybrid, not distilling, on_chosen)
    if student is not None:
        choose_student(student)
        hybrid = student_fusion(student)
    summary = summarize(data, settings, prepared, results, choice, refitted, started, hybrid)
    if runs:
        summary.average_carves = runs
        summary.selection = "; ".join(filter(None, [summary.selection, (
            f"the saved head is the mean of {len(runs)} runs' heads, "
            + ("each chosen on its own dev carve and refit on all the data" if data.dev_carved
               else "each with its own seed, chosen on the data's dev split")
            + " (--average-carves); the dev figures are the first run's")]))  # fmt: skip
    model = prepared.model
    if student is not None:
        refit_student(prepared, settings, data, student, refitted)
        model = student.model
        summary.full_width_dev, summary.trained_dev = summary.trained_dev, student.dev
        summary.start_dev = student.start_dev
        summary.trained_dev_unseen = _finite(student.dev_unseen)
        summary.vetoes = summary.vetoes + student.vetoes
        summary.distill_epochs, summary.distill_seconds = student.epochs, student.seconds
        summary.pseudo_queries = 0 if student.pseudo is None else len(student.pseudo)
        summary.pseudo_source = pseudo_description(settings.pseudo_sentences)
        summary.seconds = time.time() - started
    if is_main_process():
        if fill_card is not None:
            chosen = Trial(choice.result.learning_rate, choice.result.weight_decay)
            fill_card(model, summary, TrialLog.read(trials / chosen.name))
        save(model, summary, Path(settings.output_dir), extra=save_extra, fmt=settings.format)
    return summary
