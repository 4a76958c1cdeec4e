"""Stops a training run that is collapsing, and says why and what to change.

The failure this project exists for: a head trained with MSE between cosine and 0/1 labels, random
negatives and a fine-tuning learning rate scores every pair the same (0.5 with balanced labels), or
trains and retrieves worse than the bare encoder. The guard watches a fixed probe of positive and
negative (query, document) pairs: the spread of their similarities and whether positives still
score above negatives (AUC), and stops the trainer with a diagnosis the moment either fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

MIN_SPREAD = 0.02  # std of probe cosines below this: every pair scores (almost) the same
MIN_AUC = 0.6  # P(positive scores above negative) below this, and no better than at the start: no ranking learnt


@dataclass
class ProbeStats:
    step: int
    spread: float
    auc: float
    mean_positive: float
    mean_negative: float


@dataclass
class GuardVerdict:
    """What the guard concluded; ``ok`` is False when it stopped the run."""

    ok: bool = True
    reason: str = ""
    advice: list[str] = field(default_factory=list)
    history: list[ProbeStats] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            last = self.history[-1] if self.history else None
            tail = f" (last probe: spread {last.spread:.3f}, AUC {last.auc:.3f})" if last else ""
            return f"passed: similarities kept their spread and positives kept scoring above negatives{tail}"
        return f"stopped: {self.reason} " + " ".join(self.advice)


class CollapseGuard(TrainerCallback):
    """Probe every ``every_steps`` optimizer steps (and at the start); stop on collapse.

    Args:
        model: The model being trained (the cached twin is fine: probing then costs no encoder call).
        positives: (query, document) pairs that should score high.
        negatives: (query, document) pairs that should score low.
        recipe: Facts of the run used for the advice: ``learning_rate``, ``init``, and ``loss_advice`` (the
            loss registry's word on how that loss collapses).
        every_steps: Probe interval in optimizer steps.
        patience: Consecutive failing probes (after the first) before stopping.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        positives: list[tuple[str, str]],
        negatives: list[tuple[str, str]],
        recipe: dict | None = None,
        every_steps: int = 20,
        patience: int = 2,
    ) -> None:
        if not positives or not negatives:
            raise ValueError("CollapseGuard needs at least one positive and one negative probe pair.")
        self.model = model
        self.positives = positives
        self.negatives = negatives
        self.recipe = recipe or {}
        self.every_steps = max(1, every_steps)
        self.patience = patience
        self.verdict = GuardVerdict()
        self._failures = 0

    @torch.no_grad()
    def probe(self, step: int) -> ProbeStats:
        pairs = self.positives + self.negatives
        was_training = self.model.training
        self.model.eval()
        queries = self.model.encode_query([q for q, _ in pairs], convert_to_tensor=True, show_progress_bar=False)
        documents = self.model.encode_document([d for _, d in pairs], convert_to_tensor=True, show_progress_bar=False)
        self.model.train(was_training)
        scores = torch.nn.functional.cosine_similarity(queries, documents).float().cpu()
        positive, negative = scores[: len(self.positives)], scores[len(self.positives) :]
        auc = (positive[:, None] > negative[None, :]).float().mean() + 0.5 * (
            positive[:, None] == negative[None, :]
        ).float().mean()
        stats = ProbeStats(step, scores.std().item(), auc.item(), positive.mean().item(), negative.mean().item())
        self.verdict.history.append(stats)
        return stats

    def _diagnose(self, stats: ProbeStats) -> tuple[str, list[str]]:
        if stats.spread < MIN_SPREAD:
            reason = (
                f"similarities collapsed: every probe pair scores about {stats.mean_positive:.2f} "
                f"(std {stats.spread:.4f}; positives {stats.mean_positive:.3f}, negatives {stats.mean_negative:.3f})."
            )
        else:
            reason = (
                f"positives stopped scoring above negatives (probe AUC {stats.auc:.2f}; positives "
                f"{stats.mean_positive:.3f}, negatives {stats.mean_negative:.3f})."
            )
        advice = []
        learning_rate = self.recipe.get("learning_rate")
        if learning_rate is not None and learning_rate < 1e-4:
            advice.append(f"Learning rate {learning_rate:g} is too low for a head; try 1e-3.")
        if self.recipe.get("loss_advice"):
            advice.append(self.recipe["loss_advice"])
        if self.recipe.get("init") == "default":
            advice.append("A randomly initialised head starts far from the encoder: use --init identity (the default).")
        if not advice:
            advice.append("Lower the learning rate or use the ranking loss (--loss mnrl).")
        return reason, advice

    def _check(self, state: TrainerState, control: TrainerControl) -> None:
        stats = self.probe(state.global_step)
        start = self.verdict.history[0].auc
        failing = stats.spread < MIN_SPREAD or (stats.auc < MIN_AUC and stats.auc <= start)
        self._failures = self._failures + 1 if failing and state.global_step > 0 else 0
        if self._failures >= self.patience:
            reason, advice = self._diagnose(stats)
            self.verdict.ok, self.verdict.reason, self.verdict.advice = False, reason, advice
            control.should_training_stop = True
            control.should_save = False

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.probe(state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.every_steps == 0:
            self._check(state, control)
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step % self.every_steps != 0:
            self._check(state, control)
        return control
