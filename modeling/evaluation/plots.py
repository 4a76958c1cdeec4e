"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_score_distributions(
    samples: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, score: str = "cosine"
) -> Path:
    """One panel per system: histogram of relevant vs non-relevant pair scores (collapse = one narrow spike)."""
    figure, axes = plt.subplots(1, len(samples), figsize=(5 * len(samples), 3.6), sharex=True, squeeze=False)
    values = np.concatenate([np.concatenate(pair) for pair in samples.values()])
    bins = np.linspace(values.min(), values.max(), 50) if values.size and values.min() < values.max() else 50
    for axis, (name, (relevant, non_relevant)) in zip(axes[0], samples.items()):
        axis.hist(
            non_relevant,
            bins=bins,
            density=True,
            alpha=0.6,
            label=f"non-relevant (n={non_relevant.size})",
            color="tab:gray",
        )
        axis.hist(
            relevant, bins=bins, density=True, alpha=0.6, label=f"relevant (n={relevant.size})", color="tab:green"
        )
        axis.set_title(name)
        axis.set_xlabel(f"{score} score")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("density")
    figure.suptitle("Scores of relevant vs non-relevant (query, document) pairs")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_metric_change(
    after: dict[str, float], before: dict[str, float], names: tuple[str, str], path: Path, metric: str = "nDCG@10"
) -> Path:
    """Per-query change ``after - before``, sorted: how many queries gained, lost, stayed put, and by how much."""
    deltas = np.sort(np.asarray([after[qid] - before[qid] for qid in before]))
    gained, lost = int((deltas > 1e-9).sum()), int((deltas < -1e-9).sum())
    figure, axis = plt.subplots(figsize=(8, 3.6))
    colors = np.where(deltas > 0, "tab:green", np.where(deltas < 0, "tab:red", "tab:gray"))
    axis.bar(np.arange(deltas.size), deltas, width=1.0, color=colors)
    axis.axhline(0, color="black", linewidth=0.6)
    axis.set_xlabel("queries, sorted by change")
    axis.set_ylabel(f"{metric}: {names[0]} - {names[1]}")
    axis.set_title(
        f"Per-query {metric} change, {names[0]} vs {names[1]}: {gained} up, {lost} down, "
        f"{deltas.size - gained - lost} same; mean {deltas.mean():+.4f}"
        if deltas.size
        else "no queries"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def trial_label(trial: dict) -> str:
    """A grid trial's name: learning rate and, when the grid has one, weight decay (two trials, two names)."""
    label = f"lr {trial['learning_rate']:g}"
    return label if trial.get("weight_decay") is None else f"{label}, wd {trial['weight_decay']:g}"


def plot_dev_curves(trials: list[dict], base_score: float, path: Path) -> Path:
    """Dev nDCG@10 after each epoch, one line per trial of the grid, against the bare encoder (the training picture)."""
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    for trial in trials:
        history = trial.get("dev_history") or []
        if history:
            epochs, scores = zip(*history)
            stopped = " (stopped by the collapse guard)" if trial.get("stopped") else ""
            axis.plot(epochs, scores, marker="o", markersize=3, label=f"{trial_label(trial)}{stopped}")
    axis.axhline(base_score, color="black", linestyle="--", linewidth=1, label="bare encoder")
    axis.set_xlabel("epoch")
    axis.set_ylabel("dev nDCG@10")
    axis.set_title("Dev nDCG@10 while training the head")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
