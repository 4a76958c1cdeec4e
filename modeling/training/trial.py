"""One training run of the head (one learning rate) with the library's SentenceTransformerTrainer.

The model the trainer sees is the cached twin (``[CachedEmbeddingInput, head, Normalize]``): no encoder call
inside the loop, checkpoints hold the head only, the dev evaluation each epoch reads the cache, and the
trainer keeps the best epoch by dev nDCG@10 (``load_best_model_at_end``).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import (
    ContrastiveLoss,
    CosineSimilarityLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from sentence_transformers.sentence_transformer.training_args import (
    BatchSamplers,
    SentenceTransformerTrainingArguments,
)
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from modeling.cache.indexed_rows import IndexedNoDuplicatesBatchSampler, use_cached_rows
from modeling.model.projection_head import ProjectionHead
from modeling.training.collapse_guard import CollapseGuard, GuardVerdict

LOSSES = ("mnrl", "cosine-mse", "contrastive")
DEV_NAME = "dev"
DEV_METRIC = f"eval_{DEV_NAME}_cosine_ndcg@10"


@dataclass
class TrialConfig:
    learning_rate: float
    epochs: int = 20
    batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    loss: str = "mnrl"
    scale: float = 20.0
    seed: int = 0
    init: str = "identity"
    stop_after_epoch: int | None = None  # refit: no dev selection, stop after this many epochs of the same schedule


@dataclass
class TrialResult:
    learning_rate: float
    weight_decay: float
    best_dev: float
    best_epoch: float | None
    dev_history: list[tuple[float, float]] = field(default_factory=list)
    guard: str = ""
    stopped: bool = False
    train_loss: float | None = None
    steps: int = 0


class BarOnlyProgress(ProgressCallback):
    """The trainer's progress bar without its dump of every log dict (the job prints a line per trial)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return control


class StopAfterEpoch(TrainerCallback):
    """Ends training after ``epoch`` epochs while keeping the learning-rate schedule of the full run."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.epoch - 1e-6:
            control.should_training_stop = True
            control.should_save = True
        return control


def make_loss(name: str, model: SentenceTransformer, scale: float = 20.0):
    """The library's loss for a name: in-batch ranking, the user's cosine-MSE, or contrastive."""
    if name == "mnrl":
        return MultipleNegativesRankingLoss(model, scale=scale)
    if name == "cosine-mse":
        return CosineSimilarityLoss(model)
    if name == "contrastive":
        return ContrastiveLoss(model)
    raise ValueError(f"Unknown loss {name!r}; choose one of {LOSSES}.")


def dev_evaluator(queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]]):
    return InformationRetrievalEvaluator(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        name=DEV_NAME,
        batch_size=512,
        show_progress_bar=False,
        write_csv=False,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10, 100],
        map_at_k=[100],
    )


def probe_pairs(
    queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]], size: int = 64, seed: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Positive and random-negative (query, document) pairs from the dev split, for the collapse guard."""
    rng = random.Random(seed)
    ids = sorted(queries)
    rng.shuffle(ids)
    doc_ids = sorted(corpus)
    positives, negatives = [], []
    for qid in ids[:size]:
        relevant_docs = sorted(relevant.get(qid, ()))
        if not relevant_docs:
            continue
        positives.append((queries[qid], corpus[rng.choice(relevant_docs)]))
        negative = rng.choice(doc_ids)
        while negative in relevant[qid] and len(relevant[qid]) < len(doc_ids):
            negative = rng.choice(doc_ids)
        negatives.append((queries[qid], corpus[negative]))
    return positives, negatives


def router_mapping(dataset: Dataset, placement: str) -> dict[str, str]:
    """Column -> route: the first column is the query, every other text column a document."""
    if placement != "query":
        return {}
    columns = [c for c in dataset.column_names if c not in ("label", "score")]
    return {column: ("query" if index == 0 else "document") for index, column in enumerate(columns)}


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was fully written (a kill -9 can leave the newest one half-written)."""
    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for candidate in candidates:
        if (candidate / "trainer_state.json").is_file() and any(candidate.glob("*.safetensors")):
            return str(candidate)
    return None


def head_state(head: ProjectionHead) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in head.state_dict().items()}


def run_trial(
    twin: SentenceTransformer,
    head: ProjectionHead,
    dataset: Dataset,
    evaluator: InformationRetrievalEvaluator,
    guard_pairs: tuple[list, list],
    config: TrialConfig,
    placement: str,
    directory: Path,
    resume: bool = False,
    show_progress: bool = True,
    use_guard: bool = True,
) -> TrialResult:
    """Train the head from its current state with one learning rate; leaves the best epoch's weights in ``head``.

    The finished trial is stored in ``directory`` (``trial.json`` + ``head.safetensors``); with ``resume`` a
    finished trial is read back instead of trained again, and an interrupted one continues from its last checkpoint.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if resume and (directory / "trial.json").is_file():
        head.load_state_dict(load_file(str(directory / "head.safetensors")))
        stored = json.loads((directory / "trial.json").read_text())
        stored["dev_history"] = [tuple(item) for item in stored["dev_history"]]
        return TrialResult(**stored)

    refit = config.stop_after_epoch is not None
    loss = make_loss(config.loss, twin, config.scale)
    guard = (
        CollapseGuard(
            twin,
            *guard_pairs,
            recipe={"learning_rate": config.learning_rate, "loss": config.loss, "init": config.init},
            every_steps=max(1, len(dataset) // config.batch_size // 2),
        )
        if use_guard
        else None
    )
    args = SentenceTransformerTrainingArguments(
        output_dir=str(directory / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=512,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        eval_strategy="no" if refit else "epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=not refit,
        metric_for_best_model=None if refit else DEV_METRIC,
        greater_is_better=None if refit else True,
        logging_strategy="epoch",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=IndexedNoDuplicatesBatchSampler if config.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER,
        router_mapping=router_mapping(dataset, placement),
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),
        # The loss runs the model twice per step (queries, then documents); DDP's unused-parameter search would
        # see the head's parameters "ready twice". Every head parameter gets a gradient from the query pass.
        ddp_find_unused_parameters=False,  # also what makes torchrun on CPU a real gloo multi-process run
    )
    trainer = SentenceTransformerTrainer(
        model=twin,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=None if refit else evaluator,
        callbacks=([guard] if use_guard else []) + ([StopAfterEpoch(config.stop_after_epoch)] if refit else []),
    )
    use_cached_rows(trainer, dataset)  # batches gathered by text id from the cache, not hashed per text
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    if show_progress:
        trainer.add_callback(BarOnlyProgress())
    checkpoint = last_complete_checkpoint(Path(args.output_dir)) if resume else None
    output = trainer.train(resume_from_checkpoint=checkpoint)
    history = [(entry["epoch"], entry[DEV_METRIC]) for entry in trainer.state.log_history if DEV_METRIC in entry]
    verdict = guard.verdict if guard is not None else GuardVerdict()
    best = trainer.state.best_metric if trainer.state.best_metric is not None else float("nan")
    best_epoch = next((epoch for epoch, score in history if score == best), None)
    if refit:
        best_epoch = trainer.state.epoch
    result = TrialResult(
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        best_dev=float(best),
        best_epoch=best_epoch,
        dev_history=history,
        guard=str(verdict),
        stopped=not verdict.ok,
        train_loss=output.training_loss,
        steps=trainer.state.global_step,
    )
    if trainer.is_world_process_zero():
        save_file(head_state(head), str(directory / "head.safetensors"))
        (directory / "trial.json").write_text(json.dumps(asdict(result), indent=2))
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)  # finished: the resume points are not needed
    return result
