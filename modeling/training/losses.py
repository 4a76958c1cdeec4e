"""The losses a head can be trained with: one registry entry per loss, the only place a loss is added.

Each entry says how to build the library's loss, whether it trains on labelled (query, document, label) rows or
on ranking rows (query, positive, negative...), which batch sampler fits it, and what the collapse guard should
advise when a run with it collapses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    ContrastiveLoss,
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.training_args import BatchSamplers

_MSE_ADVICE = (
    "MSE on 0/1 labels with random negatives is minimised by a constant score: use the ranking loss "
    "(--loss mnrl), which only asks positives to beat negatives."
)


@dataclass(frozen=True)
class LossSpec:
    build: Callable[[SentenceTransformer, float], object]  # (model, scale) -> the library's loss
    help: str
    labelled: bool  # True: (query, document, label) rows; False: (query, positive, negative...) rows
    batch_sampler: str
    collapse_advice: str | None = None  # what the collapse guard adds when a run with this loss collapses


LOSSES: dict[str, LossSpec] = {
    "mnrl": LossSpec(
        build=lambda model, scale: MultipleNegativesRankingLoss(model, scale=scale),
        help="in-batch ranking (default)",
        labelled=False,
        # In-batch negatives: two rows of one query in a batch would make its own positive a negative.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    ),
    "cosine-mse": LossSpec(
        build=lambda model, scale: CosineSimilarityLoss(model),
        help="MSE of cosine vs 0/1 labels",
        labelled=True,
        batch_sampler=BatchSamplers.BATCH_SAMPLER,
        collapse_advice=_MSE_ADVICE,
    ),
    "contrastive": LossSpec(
        build=lambda model, scale: ContrastiveLoss(model),
        help="contrastive",
        labelled=True,
        batch_sampler=BatchSamplers.BATCH_SAMPLER,
        collapse_advice=_MSE_ADVICE,
    ),
}


def make_loss(name: str, model: SentenceTransformer, scale: float = 20.0):
    """The library's loss for a registered name."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {tuple(LOSSES)}.")
    return LOSSES[name].build(model, scale)
