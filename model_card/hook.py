"""The card hook train.py passes to ``modeling.training.run.train``: ``card_hook(model, summary)``.

With ``summary=None`` (right after the model is built) it installs the card data, so the trainer's card
callback fills it; with the run's ``TrainSummary`` (just before saving) it turns the summary into the
card's training facts. The run trains one trial per learning rate, so it also keeps, of the library's
per-step logs and hyperparameters, those of the trial that was kept.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformer

from model_card.card_data import HeadModelCardData
from model_card.prepare import install_card_data, prepare_card


def card_hook(model: SentenceTransformer, summary: Any = None) -> HeadModelCardData:
    """Install the card data (``summary is None``) or fill it from train.py's ``TrainSummary``."""
    if summary is None or not isinstance(model.model_card_data, HeadModelCardData):
        install_card_data(model)
    if summary is None:
        return model.model_card_data
    card = model.model_card_data
    info = training_info(summary)
    chosen = getattr(summary, "chosen_learning_rate", None)
    note = _keep_chosen_trial(card, info.get("trials", []), chosen, getattr(summary, "chosen_weight_decay", None))
    if note:
        info["logs_note"] = note
    if chosen is not None and card.all_hyperparameters:  # the library recorded the last trial's learning rate
        card.all_hyperparameters["learning_rate"] = chosen
        card.non_default_hyperparameters["learning_rate"] = chosen
    encoder = getattr(summary, "encoder", None)
    return prepare_card(model, head_info={"encoder": encoder} if encoder else None, training_info=info)


def training_info(summary: Any) -> dict[str, Any]:
    """``prepare_card``'s ``training_info`` from a ``TrainSummary`` (attributes read leniently)."""
    get = lambda name, default=None: getattr(summary, name, default)  # noqa: E731
    trials = [dict(trial) for trial in get("trials", []) or []]
    kept_identity = bool(get("kept_identity", False))
    info = {
        "dataset_name": get("data_name"),
        "num_pairs": get("num_pairs"),
        "num_queries": get("num_train_queries"),
        "dev_queries": get("num_dev_queries"),
        "learning_rates_tried": list(dict.fromkeys(trial.get("learning_rate") for trial in trials)) or None,
        "weight_decays_tried": list(dict.fromkeys(trial["weight_decay"] for trial in trials if "weight_decay" in trial))
        or None,
        "learning_rate": get("chosen_learning_rate"),
        "weight_decay": get("chosen_weight_decay"),
        "best_epoch": get("chosen_epoch"),
        "cached_texts": get("cached_texts"),
        "encoder_calls": get("encoder_calls"),
        "training_time": f"{get('seconds'):.0f} s" if isinstance(get("seconds"), (int, float)) else None,
        "collapse_guard_verdict": get("guard") or None,
        "dev_metrics": {"This model": get("trained_dev") or {}, "Base encoder": get("base_dev") or {}},
        "trials": [
            {**trial, "guard": ("stopped: " if trial.get("stopped") else "") + str(trial.get("guard", ""))}
            for trial in trials
        ],
        "kept_identity": kept_identity,
        "interpolation_toward_trained_head": get("interpolation"),
        "refit": "retrained on train + the carved dev split with the chosen settings" if get("refit_on_dev") else None,
    }
    if kept_identity:
        info["outcome"] = "no trial beat the bare encoder on dev: the head was kept at its identity start"
    return {key: value for key, value in info.items() if value not in (None, "", [], {})}


def _keep_chosen_trial(
    card: HeadModelCardData, trials: list[dict[str, Any]], chosen: float | None, chosen_decay: float | None = None
) -> str | None:
    """Keep the log rows of the chosen trial (each trial restarts at step 1); returns the note the card shows."""
    rows = [row for row in card.training_logs if row.get("Step", 0) >= 0]
    segments: list[list[dict]] = []
    for row in rows:
        if not segments or row["Step"] <= segments[-1][-1]["Step"]:
            segments.append([])
        segments[-1].append(row)
    keys = [(trial.get("learning_rate"), trial.get("weight_decay", chosen_decay)) for trial in trials]
    if chosen is None or len(segments) < len(trials) or (chosen, chosen_decay) not in keys:
        return None
    card.training_logs = segments[keys.index((chosen, chosen_decay))]
    decay = f", weight decay {chosen_decay:g}" if chosen_decay is not None else ""
    return f"The trial that was kept (learning rate {chosen:g}{decay}); the Trials table above compares all of them."
