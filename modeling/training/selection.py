"""Model selection that is not noise: dev curves pooled over several carves, and a veto that knows its error bar.

Why: one carved dev split of SciFact has ~81 queries, so one standard error of nDCG@10 is ~0.03, about the gap
between the settings being chosen. Trials are seconds long on cached embeddings, so the grid can run on several
carves of the training queries (``recarve``) and each setting (learning rate, decay, hard negatives, epoch) is
judged by its dev score averaged over the carves (``pooled_choice``).

The veto on the by-document half of dev (queries whose relevant documents training never saw) is there to keep a
setting that memorises training positives from being chosen for its seen-document gains. With 40-80 such queries
a fixed threshold (0.005) is pure noise and vetoed good settings; ``vetoed`` only fires when the setting is below
the reference by more than ``z`` standard errors of the per-query difference (z = 1.64: one-sided 5%).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from modeling.data.training_data import MIN_DEV_QUERIES, TrainingData, _carve_dev

VETO_Z = 1.64


@dataclass(frozen=True)
class PooledChoice:
    """The setting and epoch with the best dev score averaged over carves."""

    key: Hashable
    epoch: float
    mean_dev: float
    per_carve: tuple[float, ...]


def carve_seeds(seed: int, count: int) -> list[int]:
    """Seeds of ``count`` carves; the first is ``seed`` itself (the carve a single-carve run uses)."""
    if count < 1:
        raise ValueError(f"Selection needs at least one carve, got {count}.")
    rng = random.Random(f"carves-{seed}")
    extra: list[int] = []
    while len(extra) < count - 1:
        candidate = rng.randrange(1, 2**31)
        if candidate != seed and candidate not in extra:
            extra.append(candidate)
    return [seed, *extra]


def recarve(data: TrainingData, fraction: float, seed: int) -> TrainingData:
    """The same training data with another seeded dev carve (half by document, half by query, as the first)."""
    if not data.dev_carved:
        raise ValueError("Only a dev split carved from the training data can be carved again; this one was given.")
    merged = data.with_dev_merged()
    fresh = TrainingData(
        name=data.name,
        pairs={query: list(docs) for query, docs in merged.pairs.items()},
        negatives={query: list(docs) for query, docs in merged.negatives.items()},
        labelled=list(merged.labelled),
        corpus=list(data.corpus),
        source_columns=list(data.source_columns),
    )
    # The first carve's document ids (the dev corpus) keep qrels comparable between carves.
    doc_ids = {text: doc_id for doc_id, text in data.dev_corpus.items()}
    missing = [text for text in fresh.corpus if text not in doc_ids]
    doc_ids.update({text: f"doc-extra-{i}" for i, text in enumerate(missing)})
    _carve_dev(fresh, fraction, seed, doc_ids)
    if len(fresh.dev_queries) < MIN_DEV_QUERIES:
        raise ValueError(f"Carve {seed} holds only {len(fresh.dev_queries)} dev queries.")
    return fresh


def pooled_choice(histories: dict[Hashable, Sequence[Sequence[tuple[float, float]]]]) -> PooledChoice:
    """The (setting, epoch) with the highest dev score averaged over carves.

    ``histories[key][carve]`` is that setting's dev curve on that carve, ``[(epoch, score), ...]``. Only epochs
    every carve scored count (a carve stopped early by the collapse guard shortens its setting's curve). Ties go to
    the earlier epoch (less training, closer to the encoder).
    """
    best: PooledChoice | None = None
    for key, curves in histories.items():
        if not curves or any(not curve for curve in curves):
            continue
        by_epoch = [{round(epoch, 6): score for epoch, score in curve} for curve in curves]
        common = sorted(set.intersection(*(set(scores) for scores in by_epoch)))
        for epoch in common:
            scores = tuple(scores[epoch] for scores in by_epoch)
            if any(math.isnan(s) for s in scores):
                continue
            mean = statistics.fmean(scores)
            if best is None or mean > best.mean_dev + 1e-12:
                best = PooledChoice(key, epoch, mean, scores)
    if best is None:
        raise ValueError("No setting has a dev score on every carve.")
    return best


def average_curves(curves: Sequence[dict[float, float]]) -> dict[float, float]:
    """Per-point mean of several dev curves over the same points (e.g. the interpolation weights of each carve)."""
    points = set.intersection(*(set(curve) for curve in curves))
    return {point: statistics.fmean(curve[point] for curve in curves) for point in sorted(points)}


def standard_error(differences: Sequence[float]) -> float:
    if len(differences) < 2:
        return float("inf")
    return statistics.stdev(differences) / math.sqrt(len(differences))


def vetoed(candidate: Sequence[float], reference: Sequence[float], z: float = VETO_Z) -> bool:
    """Whether ``candidate`` is below ``reference`` beyond noise: its mean per-query deficit exceeds ``z`` standard
    errors. Both lists score the same queries in the same order (e.g. the by-document half of dev, all carves)."""
    if len(candidate) != len(reference):
        raise ValueError("vetoed needs the same queries scored for both.")
    if not candidate:
        return False
    differences = [c - r for c, r in zip(candidate, reference)]
    deficit = -statistics.fmean(differences)
    error = standard_error(differences)
    return deficit > 0 and (error == 0.0 or deficit > z * error)
