"""The model card of a projection head on a frozen encoder: card data, template, evaluation section.

Order of calls in a training script: ``build_model(..., model_card_data=TrainingCard.card_data())`` (the trainer's
card callback then fills datasets, loss, hyperparameters and logs), ``TrainingCard.fill(model, summary, log)`` just
before saving, and later ``add_evaluation(model_dir, results, plots)`` from ``evaluate.py --card``.
``install_card_data`` / ``prepare_card`` do the same for a model built without card data.
"""

from model_card.card_data import EVALUATION_END, EVALUATION_START, HeadModelCardData
from model_card.evaluation import add_evaluation
from model_card.prepare import head_facts, install_card_data, prepare_card
from model_card.training_card import TrainingCard

__all__ = [
    "EVALUATION_END",
    "EVALUATION_START",
    "HeadModelCardData",
    "add_evaluation",
    "head_facts",
    "install_card_data",
    "prepare_card",
    "TrainingCard",
]
