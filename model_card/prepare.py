"""Put ``HeadModelCardData`` on a model and fill it with facts read from the model and the training run.

Training gives ``HeadModelCardData`` to ``build_model(model_card_data=...)`` so the trainer's card callback fills
it, then ``prepare_card`` just before saving (``model_card.TrainingCard`` does both for train.py);
``install_card_data`` gives one to a model built without it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from model_card.card_data import HeadModelCardData
from modeling.model.build import encoder_display_name, encoder_source, find_head
from modeling.model.layout import ModelLayout

# Card fields that belong to one object and must not be carried from the card data being replaced.
_NOT_CARRIED = {"model", "template_path", "_cached_dict", "first_save", "save_dir", "_asset_cache"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def install_card_data(model: SentenceTransformer, **fields: Any) -> HeadModelCardData:
    """Give ``model`` a ``HeadModelCardData`` (for a model built without one; training passes it at construction).

    ``fields`` are ``HeadModelCardData`` init fields (``model_id``, ``language``, ``license``,
    ``train_datasets``, ...). What the previous card data recorded (base model, logs, tags) is carried over.
    ``local_files_only`` defaults to True: the card never looks anything up on the Hub.
    """
    fields.setdefault("local_files_only", True)
    unknown = set(fields) - {spec.name for spec in dataclasses.fields(HeadModelCardData) if spec.init}
    if unknown:
        raise TypeError(f"install_card_data got unknown card fields: {sorted(unknown)}")
    if fields.get("model_id") and str(fields["model_id"]).count("/") != 1:
        raise ValueError(f"model_id must look like 'org/name', got {fields['model_id']!r}")
    previous, card = model.model_card_data, HeadModelCardData(**fields)
    for spec in dataclasses.fields(previous):
        if spec.name not in _NOT_CARRIED and spec.name not in fields and hasattr(card, spec.name):
            value = getattr(previous, spec.name)
            if spec.name == "tags":
                card.add_tags(list(value or []))
            elif spec.name == "license" and value is None:
                continue  # the library's default (none) must not erase ours
            elif value not in (None, [], {}, ""):
                setattr(card, spec.name, value)
    model.model_card_data = card
    model._model_card_text = None  # never reuse a README read from disk: regenerate from this data
    card.register_model(model)
    _set_encoder(card, model, None)
    card.head = head_facts(model)
    return card


def prepare_card(
    model: SentenceTransformer,
    *,
    head_info: dict[str, Any] | None = None,
    training_info: dict[str, Any] | None = None,
    model_id: str | None = None,
    model_name: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
) -> HeadModelCardData:
    """Fill the card before ``save_model``: head facts, encoder, training facts, limitations.

    Args:
        head_info: Extra head facts; those read from the model itself (kind, placement, dimensions,
            init, parameter counts) always win. ``head_info["encoder"]`` names the encoder if the
            model cannot tell (e.g. a local folder that mirrors a Hub model).
        training_info: Any of ``dataset_name``, ``dataset_id``, ``data_license``, ``num_pairs``, ``loss``,
            ``learning_rate``, ``epochs``, ``batch_size``, ``seed``, ``encoder_calls``,
            ``collapse_guard_verdict`` (str), ``dev_metrics`` (dict), ``limitations`` (list of str);
            other keys are listed as they are. Missing keys are left out of the card.
        model_id: The Hub repo id (``org/name``) if known; ``modeling.hub.push_model`` fills it otherwise.
    """
    card = model.model_card_data
    if not isinstance(card, HeadModelCardData):
        card = install_card_data(model)
    head_info = dict(head_info or {})
    training_info = dict(training_info or {})
    if model_id:
        card.set_model_id(model_id)
    if model_name:
        card.model_name = model_name
    if language:
        card.set_language(language)
    if license:
        card.set_license(license)
    _set_encoder(card, model, head_info.pop("encoder", None))
    card.head = {**head_info, **head_facts(model)}
    card.training = training_info
    if training_info.get("dataset_name"):
        named = {"name": str(training_info["dataset_name"])}
        if training_info.get("dataset_id"):
            named["id"] = str(training_info["dataset_id"])
        if not card.train_datasets:
            card.train_datasets = [named]
        elif len(card.train_datasets) == 1 and not card.train_datasets[0].get("name"):
            card.train_datasets[0].update(named)  # the trainer recorded size/columns/examples, but no name
    card.limitations = limitations(card, model)
    return card


def head_facts(model: SentenceTransformer) -> dict[str, Any]:
    """What the card says about the head, read from the model (never from what a caller believes)."""
    layout = ModelLayout.of(model)
    head = find_head(model)
    encoder_parameters = [p for module in layout.prefix for p in module.parameters()]
    facts = {
        "kind": head.kind,
        "placement": layout.placement,
        "in_features": head.in_features,
        "out_features": head.out_features,
        "init": head.init,
        "trainable_parameters": head.num_trainable_parameters(),
        "encoder_parameters": sum(p.numel() for p in encoder_parameters),
        "encoder_frozen": not any(p.requires_grad for p in encoder_parameters),
        "normalized": layout.normalize,
        "seed": head.seed,
    }
    if head.kind == "mlp":
        facts.update(hidden_features=head.hidden_features, activation=head.activation)
    if head.dropout:
        facts["dropout"] = head.dropout
    return facts


def limitations(card: HeadModelCardData, model: SentenceTransformer) -> list[str]:
    """Plain sentences, most important first; each follows from a fact on the card."""
    head, training = card.head, card.training
    encoder = card.encoder_name or "the base encoder"
    items = []
    if training.get("kept_identity"):
        items.append(
            "No training trial beat the bare encoder on the dev set, so the head was kept at its identity start: this "
            f"model returns exactly the embeddings of {encoder}. Use {encoder} directly unless you need this repo's layout."
        )
    pairs = training.get("num_pairs")
    data = training.get("dataset_name")
    trained_on = f"{pairs:,} pairs" if isinstance(pairs, int) else "a small set of pairs"
    items.append(
        f"Trained on {trained_on}{f' from {data}' if data else ''}. Gains from a head trained on little data "
        "tend to concentrate on the documents seen in training: judge the model by the *unseen* slice of the "
        "Evaluation section if your corpus holds new documents."
    )
    if training.get("hybrid"):
        items.append(
            "Prefer the hybrid with BM25 (the dense weight in `hybrid.json`, chosen on dev; `evaluate.py` uses it) for "
            "queries about documents that were not training positives. In this project's SciFact benchmark "
            "(all-MiniLM-L6-v2) the head's gain was on queries whose documents it saw in training (seen nDCG@10 "
            "0.63 -> 0.88-0.91), while on unseen documents it stayed level with the bare encoder (0.67-0.69 vs 0.676) "
            "and the hybrid reached 0.74 there."
        )
    if head.get("placement") == "query":
        items.append(
            "Only queries are adapted. Documents keep the base encoder's embeddings, so a document the base "
            "encoder represents badly stays badly represented."
        )
    else:
        items.append(
            f"Queries and documents both go through the head: embed the whole corpus with this model. Embeddings "
            f"from {encoder} alone are not comparable with this model's."
        )
    if head.get("out_features", 0) < head.get("in_features", 0):
        items.append(
            f"The output is reduced to {head['out_features']} dimensions (from {head['in_features']}); some "
            "information in the encoder's embedding is dropped by design."
        )
    items.append(
        f"The head only works on {encoder}: it expects its {head.get('in_features')}-dim embeddings, and loading it "
        "on another encoder raises an error."
    )
    items.append(
        "Loading runs code from this repository (`frozen_head/projection_head.py`, which imports only the standard library, "
        "torch and sentence-transformers), hence `trust_remote_code=True`. Read the file before you trust it."
    )
    items.append(
        f"Inputs longer than {model.max_seq_length} tokens are truncated, and the model inherits the languages, "
        f"domains and biases of {encoder}."
    )
    if training.get("data_license"):
        items.append(
            f"The training data is licensed {training['data_license']}; check that this allows your use of the model."
        )
    items.extend(str(item) for item in training.get("limitations", []) or [])
    return items


def _set_encoder(card: HeadModelCardData, model: SentenceTransformer, named: str | None) -> None:
    """Name the encoder; set ``base_model`` only to a Hub id (the Hub rejects or mislinks local paths)."""
    source = named or encoder_source(model)
    name = encoder_display_name(source) if source else (card.encoder_name or card.base_model)
    if not name:
        return
    card.encoder_name = name
    card.base_model = name if _HUB_ID.fullmatch(name) and not Path(name).exists() else None
    if card.base_model is None:
        card.base_model_revision = None
