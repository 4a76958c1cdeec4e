"""The model card of a projection head on a frozen encoder: card data, template, evaluation section.

Order of calls in a training script: ``install_card_data(model)`` right after ``build_model`` (the
trainer's card callback then fills datasets, loss, hyperparameters and logs), ``prepare_card(model, ...)``
just before ``save_model`` (train.py does both through ``card_hook``), and later ``add_evaluation(model_dir, results, plots)`` from ``evaluate.py --card``.
"""

from model_card.card_data import EVALUATION_END, EVALUATION_START, HeadModelCardData
from model_card.evaluation import add_evaluation
from model_card.hook import card_hook
from model_card.prepare import head_facts, install_card_data, prepare_card

__all__ = [
    "EVALUATION_END",
    "EVALUATION_START",
    "HeadModelCardData",
    "add_evaluation",
    "card_hook",
    "head_facts",
    "install_card_data",
    "prepare_card",
]
