"""The card of a training run: card data given to the model at construction, filled from the run just before saving.

    card = TrainingCard.card_data()                  # -> build_model(..., model_card_data=card)
    TrainingCard.fill(model, summary, chosen_log)    # the run's facts, the chosen trial's own logs

The run keeps each trial's logs apart (``modeling.training.trial.TrialLog``, one per trial folder), so the card
shows the chosen trial's rows and hyperparameters as they were recorded, not re-split or patched.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformer

from model_card.card_data import HeadModelCardData
from model_card.prepare import prepare_card


class TrainingCard:
    @staticmethod
    def card_data(**fields: Any) -> HeadModelCardData:
        """Card data for ``build_model(model_card_data=...)``; never looks anything up on the Hub."""
        fields.setdefault("local_files_only", True)
        return HeadModelCardData(**fields)

    @staticmethod
    def fill(model: SentenceTransformer, summary: Any, chosen_log: Any = None) -> HeadModelCardData:
        """Turn the run's ``TrainSummary`` (and the chosen trial's ``TrialLog``) into the card's training facts."""
        card = model.model_card_data
        info = training_info(summary)
        if chosen_log is not None and getattr(chosen_log, "rows", None) and not info.get("kept_identity"):
            card.training_logs = [dict(row) for row in chosen_log.rows]
            card.all_hyperparameters = dict(chosen_log.hyperparameters)
            card.non_default_hyperparameters = dict(chosen_log.non_default_hyperparameters)
            epoch = summary.chosen_epoch  # the bold row: the epoch selection kept in that trial
            card.best_model_step = next((row["Step"] for row in card.training_logs if row.get("Epoch") == epoch), None)
            decay = summary.chosen_weight_decay
            info["logs_note"] = (
                f"The trial that was kept (learning rate {summary.chosen_learning_rate:g}"
                + (f", weight decay {decay:g}" if decay is not None else "")
                + "); the Trials table above compares all of them."
            )
        encoder = getattr(summary, "encoder", None)
        return prepare_card(model, head_info={"encoder": encoder} if encoder else None, training_info=info)


def hybrid_text(hybrid: dict) -> str | None:
    """One line on the hybrid's weight (hybrid.json), or None."""
    if "dense_weight" not in hybrid:
        return None
    return (
        f"dense weight {hybrid['dense_weight']:g} with BM25 (convex, {hybrid.get('normalisation', 'min-max')} scores), chosen on the {hybrid.get('source', 'dev split')}"
        f" (dev nDCG@10 {hybrid.get('dev_ndcg@10', float('nan')):.4f}); saved as `hybrid.json`, which `evaluate.py` uses"
    )


def training_info(summary: Any) -> dict[str, Any]:
    """``prepare_card``'s ``training_info`` from a ``TrainSummary`` (attributes read leniently)."""
    get = lambda name, default=None: getattr(summary, name, default)
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
        "hard_negatives": get("hard_negatives") or None,
        "anchor": get("anchor") or None,
        "average_carves": average_text(
            get("average_carves") or [], distilled=get("distill_epochs") is not None, carved=bool(get("refit_on_dev"))
        ),
        "hybrid": hybrid_text(get("hybrid") or {}),
    }
    if kept_identity:
        info["outcome"] = "no trial beat the bare encoder on dev: the head was kept at its identity start"
    info.update(reduced_info(summary))
    return {key: value for key, value in info.items() if value not in (None, "", [], {})}


def average_text(runs: list[dict], distilled: bool = False, carved: bool = True) -> str | None:
    """``--average-carves``: the saved head (for a distilled model: its full-width teacher) is the mean of these runs'
    heads; each one's dev choice."""
    if len(runs) < 2:
        return None
    chosen = "; ".join(
        "kept the identity" if run.get("learning_rate") is None
        else f"lr {run['learning_rate']:g}, decay {run['weight_decay']:g}, epoch {run['epoch']:.0f}"
        for run in runs
    )  # fmt: skip
    what = "the full-width teacher the reduced model learned from is" if distilled else "the head is"
    how = ("each trained on its own dev carve and seed, chosen there and refit on all the data" if carved
           else "each trained with its own seed and chosen on the data's dev split")  # fmt: skip
    return f"{what} the mean of {len(runs)} heads, {how} ({chosen}); dev metrics above are the first run's"


def reduced_info(summary: Any) -> dict[str, Any]:
    """A reduced model's facts: its dimension, the index bytes per document against the full encoder, and its dev
    quality beside the full-width head (distill: the teacher), the untrained start and the bare encoder."""
    get = lambda name, default=None: getattr(summary, name, default)
    out, full = get("out_features"), get("in_features")
    info: dict[str, Any] = {}
    if get("base_dev_unseen") is not None:
        trained = get("trained_dev_unseen")
        info["dev_by_document"] = (
            f"{trained:.4f} (bare encoder {get('base_dev_unseen'):.4f})" if trained is not None else None
        )
        info["vetoed"] = f"{len(get('vetoes') or [])} (below both the bare encoder and the start by more than 0.005)"
    if not out or not full or out >= full:
        return info
    info["design"] = get("placement")
    info["output_dimension"] = f"{out} (the encoder's: {full})"
    info["index_size"] = (
        f"{4 * out:,} bytes per document (float32), against {4 * full:,} for the full encoder: {out / full:.0%}"
    )
    info["distillation_epochs"] = get("distill_epochs")
    count = get("pseudo_queries")
    info["pseudo_queries"] = f"{count:,} ({get('pseudo_source') or 'first sentences of documents'})" if count else None
    columns = {"This model": get("trained_dev") or {}}
    if get("full_width_dev"):
        columns[f"Full-width ({full}-d) query-only head"] = get("full_width_dev")
    if get("start_dev"):
        start = "the teacher's queries and the documents projected by PCA" if get("placement") == "distill" else "PCA"
        columns[f"Start ({out}-d, untrained: {start})"] = get("start_dev")
    columns["Base encoder"] = get("base_dev") or {}
    info["dev_metrics"] = columns
    return info
