"""Card data for a projection head on a frozen encoder.

It is the library's ``SentenceTransformerModelCardData`` (so the trainer's card callback still fills
datasets, loss, hyperparameters and logs) plus the facts the library cannot know: which encoder is
frozen, what the head is, how it was trained, and what the model should not be trusted to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from modeling.integrations.snippets import STACK_END, STACK_START, section

TEMPLATE_PATH = Path(__file__).with_name("template.md")
# The library's stand-in for the repo id until the model is pushed; modeling.hub replaces it on upload.
MODEL_ID_PLACEHOLDER = "sentence_transformers_model_id"
TAGS = ["projection-head", "frozen-encoder"]
# The evaluation section is written later, by model_card.evaluation.add_evaluation, between these markers.
EVALUATION_START = "<!-- frozen-head:evaluation:start -->"
EVALUATION_END = "<!-- frozen-head:evaluation:end -->"
# ... and a one-paragraph summary of it under the card's introduction, between these.
SUMMARY_START = "<!-- frozen-head:summary:start -->"
SUMMARY_END = "<!-- frozen-head:summary:end -->"
PLACEMENT_TEXT = {
    "query": "query-only (queries go through the head; documents get the unchanged base encoder's embeddings)",
    "symmetric": "symmetric (queries and documents both go through the head)",
    "routes": "reduced, one map per side (queries go through the query head, documents through the document head, "
    "into the same smaller space)",
}
INIT_TEXT = {
    "identity": "identity: before training, the model reproduces the base encoder exactly",
    "pca": "top principal directions of sample embeddings (PCA)",
    "random": "random orthonormal projection",
}
# training_info keys the card labels; any other key is listed under its own name.
TRAINING_LABELS = {
    "dataset_name": "Training data",
    "dataset_id": "Dataset id",
    "data_license": "Training data licence",
    "num_pairs": "Training pairs",
    "num_queries": "Training queries",
    "num_documents": "Documents",
    "loss": "Loss",
    "learning_rate": "Learning rate",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "max_steps": "Steps",
    "learning_rates_tried": "Learning rates tried",
    "weight_decay": "Weight decay (pull toward the identity)",
    "weight_decays_tried": "Weight decays tried",
    "interpolation_toward_trained_head": "Interpolation from the identity to the trained head (chosen on dev)",
    "refit": "Final fit",
    "hard_negatives": "Hard negatives",
    "anchor": "Pseudo-queries anchored to the bare encoder (--anchor-weight)",
    "average_carves": "Saved head (--average-carves)",
    "hybrid": "Hybrid with BM25",
    "best_epoch": "Epoch chosen on dev",
    "dev_queries": "Dev queries",
    "seed": "Seed",
    "cached_texts": "Texts embedded by the frozen encoder (once each, then cached)",
    "encoder_calls": "Texts encoded in this run (the rest came from the cache)",
    "training_time": "Training time",
    "outcome": "Outcome",
    "design": "Reduced-model design (--placement)",
    "output_dimension": "Output dimension",
    "index_size": "Index size",
    "dev_by_document": "Dev nDCG@10 on queries whose documents training never saw",
    "vetoed": "Candidates ruled out on those queries",
    "distillation_epochs": "Distillation epochs (chosen on dev)",
    "pseudo_queries": "Pseudo-queries distilled",
}
_NOT_LISTED = {"collapse_guard_verdict", "dev_metrics", "limitations", "trials", "kept_identity", "logs_note"}
TRIAL_COLUMNS = {
    "learning_rate": "Learning rate",
    "weight_decay": "Weight decay",
    "best_dev": "Best dev nDCG@10",
    "best_epoch": "Best epoch",
    "steps": "Steps",
    "train_loss": "Final training loss",
    "guard": "Collapse guard",
}
_CONSTRUCTOR = re.compile(r'SentenceTransformer\(("[^"]*")\)')


@dataclass
class HeadModelCardData(SentenceTransformerModelCardData):
    """``SentenceTransformerModelCardData`` with the head, the frozen encoder and the training facts.

    Args (besides the library's):
        head: Facts about the head (kind, placement, in/out features, init, parameter counts, ...),
            filled by ``model_card.prepare_card`` from the model itself.
        training: Facts about the run (dataset, pairs, loss, learning rate, collapse-guard verdict, ...).
        limitations: Plain sentences for the limitations section, most important first.
        encoder_name: The encoder as the text names it; kept even when it is no Hub id and
            ``base_model`` (which the Hub links) must stay empty.
    """

    license: str | None = "apache-2.0"
    head: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    encoder_name: str | None = None
    template_path: Path = field(default=TEMPLATE_PATH, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.add_tags(TAGS)

    def register_model(self, model: Any) -> None:
        """A head model is a retriever on both placements: always show encode_query/encode_document."""
        super().register_model(model)
        self.ir_model = True
        if not self.head:  # card data given at construction: the head facts are known from here on
            from model_card.prepare import head_facts

            try:
                self.head = head_facts(model)
            except (ValueError, AttributeError):  # a model without a head (the bare encoder) has none to state
                pass

    def get_default_model_name(self) -> str:
        encoder = (self.encoder_name or self.base_model or "a frozen encoder").rsplit("/", 1)[-1]
        placement = {"query": "query-only", "symmetric": "symmetric", "routes": "reduced"}.get(self.head.get("placement"), "")
        kind = self.head.get("kind", "")
        return " ".join(f"{encoder} with a {placement} {kind} projection head".split())

    def to_dict(self) -> dict[str, Any]:
        """The library's template variables plus ready-to-print rows for our sections."""
        data = super().to_dict()
        data.update(
            encoder_link=_link(self.encoder_name, self.base_model),
            placement_short={"query": "query-only", "symmetric": "symmetric", "routes": "reduced"}.get(self.head.get("placement"), "?"),
            placement_text=PLACEMENT_TEXT.get(self.head.get("placement"), "unknown placement"),
            init_text=INIT_TEXT.get(self.head.get("init"), self.head.get("init")),
            training_rows=_training_rows(self.training),
            dev_metrics_table=_metrics_table(self.training.get("dev_metrics")),
            trials_table=_trials_table(self.training.get("trials")),
            collapse_guard_verdict=self.training.get("collapse_guard_verdict"),
            evaluation_start=EVALUATION_START,
            evaluation_end=EVALUATION_END,
            summary_start=SUMMARY_START,
            summary_end=SUMMARY_END,
            stack_section="\n".join(
                (
                    STACK_START,
                    section(self.model_id or MODEL_ID_PLACEHOLDER, self.head.get("format") != "stock", "##"),
                    STACK_END,
                )
            ),
        )
        return data

    def generate_usage_snippet(self) -> str:
        """The library's snippet, loading with ``trust_remote_code=True`` (the head's code is in the repo)."""
        snippet = super().generate_usage_snippet()
        if self.head.get("format") == "stock":  # stock modules only: the library's snippet is right as it is
            return snippet
        patched, count = _CONSTRUCTOR.subn(r"SentenceTransformer(\1, trust_remote_code=True)", snippet)
        if count == 0:  # the library changed its snippet: say it plainly rather than ship a snippet that fails
            patched = snippet.replace(
                "```python\n", "```python\n# Load with SentenceTransformer(..., trust_remote_code=True)\n", 1
            )
        return patched


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(item) for item in value)
    return str(value)


def _link(name: str | None, hub_id: str | None) -> str:
    if hub_id:
        return f"[{hub_id}](https://huggingface.co/{hub_id})"
    return f"`{name}`" if name else "an unnamed encoder"


def _training_rows(training: dict[str, Any]) -> list[tuple[str, str]]:
    known = [(label, training[key]) for key, label in TRAINING_LABELS.items() if training.get(key) not in (None, "")]
    other = [
        (key.replace("_", " ").capitalize(), value)
        for key, value in training.items()
        if key not in TRAINING_LABELS and key not in _NOT_LISTED and value not in (None, "", [], {})
    ]
    return [(label, _format(value)) for label, value in known + other]


def _metrics_table(metrics: dict[str, Any] | None) -> str:
    """Dev-set scores as a markdown table: ``{metric: value}``, or ``{column: {metric: value}}`` side by side."""
    if not metrics:
        return ""
    columns = metrics if all(isinstance(value, dict) for value in metrics.values()) else {"Value": metrics}
    names = list(
        dict.fromkeys(
            key for values in columns.values() for key, value in values.items() if isinstance(value, (int, float))
        )
    )
    if not names:
        return ""
    lines = ["| Metric | " + " | ".join(columns) + " |", "|:--|" + "--:|" * len(columns)]
    for name in names:
        cells = [
            f"{float(values[name]):.4f}" if isinstance(values.get(name), (int, float)) else "–"
            for values in columns.values()
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _trial_cell(key: str, value: Any) -> str:
    if value in (None, ""):
        return "–"
    if key in ("best_dev", "train_loss") and isinstance(value, (int, float)):
        return f"{value:.4f}"
    return _format(value)


def _trials_table(trials: list[dict[str, Any]] | None) -> str:
    """One row per trial of the (learning rate, weight decay) grid, the columns that the trials report."""
    if not trials:
        return ""
    columns = [key for key in TRIAL_COLUMNS if any(trial.get(key) not in (None, "") for trial in trials)]
    align = ["--:" if key != "guard" else ":--" for key in columns]
    lines = ["| " + " | ".join(TRIAL_COLUMNS[key] for key in columns) + " |", "|" + "|".join(align) + "|"]
    for trial in trials:
        cells = [_trial_cell(key, trial.get(key)) for key in columns]
        lines.append("| " + " | ".join(cells).replace("\n", " ") + " |")
    return "\n".join(lines)
