"""One trial of the grid, (learning rate, weight decay), trained with the library's SentenceTransformerTrainer.

The model the trainer sees is the cached twin (``[CachedEmbeddingInput, head, Normalize]``): no encoder call
inside the loop, checkpoints hold the head only, the dev evaluation each epoch reads the cache, and the best
epoch by dev nDCG@10 is kept in memory (``BestEpochInMemory``: the trainer's own comparison, a copy of the head
instead of a checkpoint per epoch to load back at the end). Checkpoints are resume points only
(``ResumePoints``): written at an epoch's end once ``--checkpoint-seconds`` passed since the last one, so a trial
of a few seconds writes none and a long one loses at most that much work to a kill. Each trial's folder holds its
result (``trial.json``), its head (``head.safetensors``) and its own log (``card_logs.json``, the rows the card
shows).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import accelerate.optimizer
import torch
from accelerate.utils import DistributedType
from accelerate.utils.memory import clear_device_cache
from datasets import Dataset
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from modeling.cache.indexed_rows import use_cached_rows, use_indexed_sampler
from modeling.model.projection_head import ProjectionHead
from modeling.training.collapse_guard import CollapseGuard, GuardVerdict
from modeling.training.dev import DEV_METRIC
from modeling.training.losses import LOSSES, make_loss
from modeling.training.negatives import base_guide, epoch_callbacks, gist_loss
from modeling.training.settings import TrainSettings, Trial

logger = logging.getLogger(__name__)

# accelerate's optimizer step asks twice per step whether the ``lomo_optim`` package is installed, each time a
# filesystem search (~60 us here, ~5 % of a head's step); the answer cannot change while the process runs.
accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)


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
    resumed_from_step: int = 0  # > 0 when an interrupted trial continued from a checkpoint


@dataclass
class TrialLog:
    """What the card shows of one trial: the library's per-epoch rows and hyperparameters, for this trial only."""

    rows: list[dict] = field(default_factory=list)
    hyperparameters: dict = field(default_factory=dict)
    non_default_hyperparameters: dict = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> TrialLog:
        path = folder / "card_logs.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()


class TrialLogCallback(TrainerCallback):
    """Moves the rows the library's card callback appends during this trial out of the shared card, into a
    ``TrialLog``: the card holds no trial's logs until the chosen one is put there (``TrainingCard.fill``)."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.card = model.model_card_data
        self.log = TrialLog()
        self._start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = len(self.card.training_logs)

    def on_train_end(self, args, state, control, **kwargs):
        self.log.rows = [dict(row) for row in self.card.training_logs[self._start :]]
        del self.card.training_logs[self._start :]
        self.log.hyperparameters = dict(self.card.all_hyperparameters)
        self.log.non_default_hyperparameters = dict(self.card.non_default_hyperparameters)


class CachedRowsTrainer(SentenceTransformerTrainer):
    """The library's trainer with three per-trial or per-step costs taken out, none of which changes an update:

    - the training loader serves batches by row index when ``use_cached_rows`` set ``indexed_batches`` (the same
      sampler, the same batches; ``modeling.cache.indexed_rows``);
    - the library's extra ``optimizer.zero_grad()`` after every step is dropped when every trained parameter is the
      model's (the trainer's own ``model.zero_grad()`` already cleared them; it exists for losses with weights);
    - accelerate's ``free_memory`` at the start of ``train`` resets its lists without its full ``gc.collect()``
      (~0.5 s a trial with torch and transformers imported; what a trial leaves is freed by reference counting).
    """

    indexed_batches = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        own = {id(p) for p in self.model.parameters()}
        if isinstance(self.loss, nn.Module) and all(id(p) in own for p in self.loss.parameters() if p.requires_grad):
            for callback in list(self.callback_handler.callbacks):
                if type(callback).__name__ == "_OptimizerZeroGradCallback":
                    self.remove_callback(callback)
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            self.accelerator.free_memory = functools.partial(free_memory_without_collect, self.accelerator)

    def get_train_dataloader(self):
        if self.indexed_batches is None:
            return super().get_train_dataloader()
        self.accelerator.even_batches = False  # as the library's own
        loader = self._build_dataloader(self.train_dataset, self.args.train_batch_size, dataset_kind="train")
        self._train_dataloader = self.accelerator.prepare(self.indexed_batches.loader(loader))
        return self._train_dataloader


def free_memory_without_collect(accelerator, *objects):
    """``Accelerator.free_memory`` (no DeepSpeed) minus its ``gc.collect()``: the device cache is still emptied."""
    accelerator._schedulers, accelerator._optimizers, accelerator._models, accelerator._dataloaders = [], [], [], []
    accelerator.step = 0
    clear_device_cache(garbage_collection=False)
    return [None] * len(objects)


class BarOnlyProgress(ProgressCallback):
    """The trainer's progress bar without its dump of every log dict (the job logs a line per trial)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return control


class StopAfterEpoch(TrainerCallback):
    """Ends training after ``epoch`` epochs while keeping the learning-rate schedule of the full run."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.epoch - 1e-6:
            control.should_training_stop = True
        return control


BEST_FILES = ("best.json", "best_head.safetensors")


class BestEpochInMemory(TrainerCallback):
    """Keeps a copy of the head at its best dev epoch and puts it back at the end of training.

    The comparison is the trainer's own (``metric_for_best_model``, strictly greater: the first of equal epochs
    wins), so this is what ``load_best_model_at_end`` gave, without writing a checkpoint every epoch to load one
    back. Every resume point also holds the best so far (``best.json``, ``best_head.safetensors``), read back by
    ``restore`` when an interrupted trial continues.
    """

    def __init__(self, head, metric: str | None) -> None:
        self.head = head
        self.metric = metric
        self.best: float | None = None
        self.step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric) if self.metric else None
        if value is not None and (self.best is None or value > self.best):
            self.best, self.step, self.state = float(value), state.global_step, head_state(self.head)
        return control

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return control  # one writer, like the checkpoint's own model files
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.state is not None:
            save_file(self.state, str(folder / BEST_FILES[1]))
        (folder / BEST_FILES[0]).write_text(json.dumps({"metric": self.best, "step": self.step}))
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.state is not None:
            self.head.load_state_dict(self.state)
            if model is not None and hasattr(model, "model_card_data"):
                model.model_card_data.set_best_model_step(self.step)  # as the library's best-model load does
        return control

    def restore(self, checkpoint: str) -> None:
        stored = json.loads((Path(checkpoint) / BEST_FILES[0]).read_text())
        if stored["step"] is not None:
            self.best, self.step = stored["metric"], stored["step"]
            self.state = load_file(str(Path(checkpoint) / BEST_FILES[1]))


class ResumePoints(TrainerCallback):
    """Lets an epoch's checkpoint be written only once ``seconds`` passed since the trial's start or its last
    checkpoint (0: every epoch). Added last, so it has the final word on the epoch's save."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save and time.monotonic() - self.last < self.seconds:
            control.should_save = False
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()
        return control


def router_mapping(dataset: Dataset, layout: str) -> dict[str, str]:
    """Column -> route: the first column is the query, every other text column a document."""
    if layout not in ("query", "routes"):
        return {}
    columns = [c for c in dataset.column_names if c not in ("label", "score")]
    return {column: ("query" if index == 0 else "document") for index, column in enumerate(columns)}


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was fully written (a kill -9 can leave the newest one half-written).

    Complete means: the trainer state, the optimizer and scheduler, the best epoch so far (``best.json``, written
    last), and the head's weights, which the library saves in the head module's own subfolder (hence the
    recursive look).
    """
    candidates = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for candidate in candidates:
        required = ("trainer_state.json", "optimizer.pt", "scheduler.pt", BEST_FILES[0])
        if all((candidate / name).is_file() for name in required) and any(candidate.rglob("*.safetensors")):
            return str(candidate)
    return None


def start_init(module) -> str | None:
    """How the trained head started (``identity``, ``pca``, ...): the module's own, or its first head's."""
    return next((m.init for m in module.modules() if isinstance(getattr(m, "init", None), str)), None)


def head_state(head: ProjectionHead) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in head.state_dict().items()}


def read_trial(head: ProjectionHead, directory: Path) -> TrialResult | None:
    """A finished trial stored in ``directory`` (its head loaded into ``head``), or None."""
    if not (directory / "trial.json").is_file():
        return None
    head.load_state_dict(load_file(str(directory / "head.safetensors")))
    stored = json.loads((directory / "trial.json").read_text())
    stored["dev_history"] = [tuple(item) for item in stored["dev_history"]]
    return TrialResult(**stored)


def trial_loss(twin: SentenceTransformer, settings: TrainSettings, anchor=None):
    """The registry's loss, or the ranking loss guarded by the frozen base (``--negative-guard gist``); with an
    ``anchor`` (``modeling.training.anchor``), that loss plus the pseudo-queries' KL term."""
    if settings.negative_guard == "gist" and not LOSSES[settings.loss].labelled:
        loss = gist_loss(twin, base_guide(twin), settings.scale, settings.negative_margin or 0.0)
    else:
        loss = make_loss(settings.loss, twin, settings.scale)
    if anchor is None:
        return loss
    from modeling.training.anchor import AnchoredLoss

    return AnchoredLoss(loss, anchor, settings.scale)


def run_trial(
    twin: SentenceTransformer,
    head: ProjectionHead,
    dataset: Dataset,
    evaluator,
    guard_pairs: tuple[list, list],
    settings: TrainSettings,
    trial: Trial,
    directory: Path,
    use_guard: bool = True,
    anchor=None,
) -> TrialResult:
    """Train the head from its current state for one trial; leaves the best epoch's weights in ``head``.

    The finished trial is stored in ``directory``; with ``settings.resume`` a finished trial is read back instead
    of trained again, and an interrupted one continues from its last complete checkpoint.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if settings.resume and (stored := read_trial(head, directory)) is not None:
        return stored

    refit = trial.stop_after_epoch is not None
    guard = (
        CollapseGuard(
            twin,
            *guard_pairs,
            recipe={
                "learning_rate": trial.learning_rate,
                "loss_advice": LOSSES[settings.loss].collapse_advice,
                "init": start_init(head),
            },
            every_steps=max(1, len(dataset) // settings.batch_size // 2),
        )
        if use_guard
        else None
    )
    args = settings.training_arguments(trial, directory / "checkpoints", router_mapping(dataset, settings.layout))
    use_indexed_sampler(args)  # NoDuplicates by text id: the library's batches without reading dataset[i] per row
    recorder = TrialLogCallback(twin)
    best = BestEpochInMemory(head, args.metric_for_best_model)
    callbacks = [recorder] + ([guard] if guard else []) + ([StopAfterEpoch(trial.stop_after_epoch)] if refit else [])
    callbacks += epoch_callbacks(dataset)  # per-epoch hard negatives: redraw before each epoch's batches
    callbacks += [best, ResumePoints(settings.checkpoint_seconds)]  # last: it decides each epoch's save
    trainer = CachedRowsTrainer(
        model=twin,
        args=args,
        train_dataset=dataset,
        loss=trial_loss(twin, settings, anchor),
        evaluator=None if refit else evaluator,
        callbacks=callbacks,
    )
    use_cached_rows(trainer, dataset)  # batches gathered by text id from the cache, not hashed per text
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    if settings.show_progress:
        trainer.add_callback(BarOnlyProgress())
    checkpoint = last_complete_checkpoint(Path(args.output_dir)) if settings.resume else None
    resumed_from = int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0
    if checkpoint:
        logger.info("%s: continuing from %s", trial.name, checkpoint)
        best.restore(checkpoint)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    history = [(entry["epoch"], entry[DEV_METRIC]) for entry in trainer.state.log_history if DEV_METRIC in entry]
    verdict = guard.verdict if guard is not None else GuardVerdict()
    best = trainer.state.best_metric if trainer.state.best_metric is not None else float("nan")
    best_epoch = trainer.state.epoch if refit else next((epoch for epoch, score in history if score == best), None)
    result = TrialResult(
        learning_rate=trial.learning_rate,
        weight_decay=trial.weight_decay,
        best_dev=float(best),
        best_epoch=best_epoch,
        dev_history=history,
        guard=str(verdict),
        stopped=not verdict.ok,
        train_loss=output.training_loss,
        steps=trainer.state.global_step,
        resumed_from_step=resumed_from,
    )
    if trainer.is_world_process_zero():
        save_file(head_state(head), str(directory / "head.safetensors"))
        (directory / "card_logs.json").write_text(json.dumps(asdict(recorder.log), indent=2, default=str))
        (directory / "trial.json").write_text(json.dumps(asdict(result), indent=2))
        shutil.rmtree(directory / "checkpoints", ignore_errors=True)  # finished: the resume points are not needed
    return result
